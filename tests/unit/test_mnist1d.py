import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pdiff.config import DataConfig, Mnist1dConfig
from pdiff.data.datasets import load_dataset
from pdiff.data.mnist1d import cache_paths, generation_args, load_mnist1d, training_size
from pdiff.errors import ConfigError


def _data_cfg(root, **mnist1d):
    mnist1d = {"val_samples": 300, "test_samples": 500, **mnist1d}
    return OmegaConf.structured(
        DataConfig(name="mnist1d", root=str(root), mnist1d=Mnist1dConfig(**mnist1d))
    )


def test_built_offline_cached_with_its_arguments_and_read_back(tmp_path, monkeypatch):
    np.random.seed(123)
    expected_draw = np.random.rand()
    np.random.seed(123)
    data = load_dataset(_data_cfg(tmp_path))
    assert np.random.rand() == expected_draw  # the package's global seeding is undone
    assert (
        data.x_train.shape == (4000, 40)
        and data.x_val.shape == (300, 40)
        and data.x_test.shape == (500, 40)
    )
    assert data.num_classes == 10
    assert data.x_train.dtype == torch.float32 and set(data.y_test.tolist()) == set(range(10))
    tensors, record = cache_paths(tmp_path, generation_args(Mnist1dConfig()))
    saved = json.loads(record.read_text())
    assert saved["args"]["seed"] == 42 and "url" not in saved["args"] and saved["mnist1d_version"]
    # validation and test are generated apart: other seeds, no training signal among them
    assert generation_args(Mnist1dConfig(), "test")["seed"] == 2042 and saved["split"] == "train"
    train_rows = {tuple(row.tolist()) for row in data.x_train}
    assert not any(
        tuple(row.tolist()) in train_rows for row in torch.cat([data.x_val, data.x_test])
    )

    import mnist1d.data

    monkeypatch.setattr(
        mnist1d.data, "make_dataset", lambda *a, **k: pytest.fail("the cache was not used")
    )
    again = load_dataset(_data_cfg(tmp_path))
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.y_train, data.y_train)


def test_other_generation_arguments_are_another_dataset(tmp_path):
    small = load_mnist1d(
        Mnist1dConfig(num_samples=200, seed=7, val_samples=30, test_samples=50), str(tmp_path)
    )
    assert small["x_train"].shape == (160, 40) and small["x_val"].shape == (30, 40)
    assert small["x_test"].shape == (50, 40)
    assert len(list((tmp_path / "mnist1d").glob("*.safetensors"))) == 3  # one file per split


def test_a_changed_cache_file_is_refused_naming_it(tmp_path):
    small = Mnist1dConfig(num_samples=100, val_samples=20, test_samples=20)
    load_mnist1d(small, str(tmp_path))
    tensors, _ = cache_paths(tmp_path, generation_args(small))
    raw = bytearray(tensors.read_bytes())
    raw[-1] ^= 0xFF
    tensors.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match=r"MNIST-1D cache .*mnist1d-.*safetensors does not match"):
        load_mnist1d(small, str(tmp_path))


def test_a_training_set_below_the_minimum_is_refused_before_anything_is_built(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"data.mnist1d.num_samples=20 with data.mnist1d.train_split=0.04 keeps 0 "
        "training signals; the training set needs at least 10",
    ):
        load_dataset(_data_cfg(tmp_path, num_samples=20, train_split=0.04))
    assert not (tmp_path / "mnist1d").exists()


def test_training_size_is_the_package_s_split_and_the_test_set_is_apart_from_it(tmp_path):
    tiny = Mnist1dConfig(num_samples=20, train_split=0.99, val_samples=10, test_samples=10)
    arrays = load_mnist1d(tiny, str(tmp_path))
    assert training_size(tiny) == len(arrays["y_train"]) == 19
    assert (
        len(arrays["y_val"]) == len(arrays["y_test"]) == 10
    )  # train_split near 1 does not shrink the test set
