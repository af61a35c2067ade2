"""The torchvision sources read from data.root: folders found, loaded with their classes."""

import pickle

import numpy as np
import pytest
import torch

from pdiff.config import DataName
from pdiff.data.datasets import load_dataset
from pdiff.data.torchvision_sets import TORCHVISION_SETS
from pdiff.errors import DataError
from tests.helpers.cifar import LAYOUTS, write_cifar
from tests.helpers.configs import compose_config


def test_a_torchvision_folder_without_its_files_is_one_line_naming_data_root(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)  # the folder is there, its files are not
    cfg = compose_config(
        ["task=mnist_cnn", f"data.root={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(
        DataError,
        match=r"data.root='.*': mnist at .*MNIST/raw cannot be read \(RuntimeError: .*\); "
        r"download it once",
    ) as error:
        load_dataset(cfg.data)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("classes, per_class", [(10, 6), (100, 2)])
def test_cifar_folders_in_torchvision_layouts_load_with_their_classes_and_images(
    tmp_path, classes, per_class
):
    write_cifar(tmp_path, classes, train_per_class=per_class * 2, test_per_class=per_class)
    cfg = compose_config(
        [
            f"task=cifar{classes}_resnet18",
            f"data.root={tmp_path}",
            "data.val_fraction=0.5",
            f"paths.output_dir={tmp_path / 'run'}",
        ]
    )
    data = load_dataset(cfg.data)
    assert data.num_classes == classes and data.input_shape == (3, 32, 32)
    assert len(data.x_train) == len(data.x_val) == len(data.x_test) == classes * per_class
    assert torch.bincount(data.y_test, minlength=classes).tolist() == [per_class] * classes
    folder = tmp_path / LAYOUTS[classes][0]
    with open(folder / LAYOUTS[classes][2], "rb") as handle:
        raw = pickle.load(handle)
    first = torch.from_numpy(raw["data"][:1].reshape(1, 3, 32, 32).astype(np.float32) / 255.0)
    mean, std = (
        torch.tensor(v).view(1, 3, 1, 1) for v in TORCHVISION_SETS[DataName(f"cifar{classes}")][2:]
    )
    assert torch.allclose(
        data.x_test[:1], (first - mean) / std
    )  # channel-major bytes, per-channel z-scores
    assert int(data.y_test[0]) == raw[LAYOUTS[classes][5]][0]
