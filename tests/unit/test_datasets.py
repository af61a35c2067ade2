"""Datasets by name: the fixed digits split."""

import torch

from pdiff.data.datasets import digits_test_indices, load_dataset
from tests.helpers.configs import compose_config


def test_digits_split_is_fixed_stratified_and_disjoint(tmp_path):
    data = load_dataset(compose_config([f"paths.output_dir={tmp_path}"]).data)
    assert data.x_train.shape == (1069, 1, 8, 8) and data.x_val.shape == (189, 1, 8, 8)
    assert data.x_test.shape == (539, 1, 8, 8)
    assert data.num_classes == 10
    test = digits_test_indices()
    assert len(set(test)) == 539 and test == sorted(test)
    counts = torch.bincount(data.y_test, minlength=10)
    assert counts.min() >= 50 and counts.max() <= 56
    assert abs(float(data.x_train.mean())) < 1e-5
