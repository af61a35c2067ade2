"""Datasets as in-memory tensors: embedded digits, MNIST-1D (built offline), your npz, torchvision
from data.root.

Every task has three splits. Validation is never trained on: it is carved from the training arrays
(stratified, seeded by data.split_seed) or, for MNIST-1D, generated apart. Test labels are read only
by the evaluate stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from pdiff.config import DataName
from pdiff.data.mnist1d import ARRAYS as MNIST1D_ARRAYS
from pdiff.data.mnist1d import CLASSES as MNIST1D_CLASSES
from pdiff.data.mnist1d import load_mnist1d, training_size
from pdiff.data.npz import npz_file, read_npz
from pdiff.data.splits import MIN_SAMPLES, TestPart, validation_split
from pdiff.data.torchvision_sets import TORCHVISION_SETS, read_torchvision, torchvision_root
from pdiff.errors import ConfigError

DIGITS_SPLIT_FILE = "digits_split.json"
# The data.* settings only some sources read (the rest of `data` applies to all): each source's own.
SOURCE_SETTINGS = {
    DataName.digits: (),
    DataName.npz: ("path",),
    DataName.mnist1d: ("root", "mnist1d"),
    DataName.mnist: ("root",),
    DataName.cifar10: ("root",),
    DataName.cifar100: ("root",),
}


def unread_data_settings(name: DataName) -> dict[str, list[str]]:
    """{data.<setting>: the sources that read it} for each source-specific setting that source
    `name` never reads."""
    settings = {setting for each in SOURCE_SETTINGS.values() for setting in each} - set(
        SOURCE_SETTINGS[name]
    )
    return {
        f"data.{setting}": [
            source.value for source, own in SOURCE_SETTINGS.items() if setting in own
        ]
        for setting in sorted(settings)
    }


@dataclass
class Dataset:
    """Normalised train, validation and test tensors; x is [N, *input_shape] float32, y is [N]
    int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(
        self, device: torch.device, memory_format: torch.memory_format = torch.preserve_format
    ) -> Dataset:
        """The same data on `device` (moved once, at the start of a stage), images in
        `memory_format`."""
        move = {
            "x": lambda t: t.to(device, memory_format=memory_format),
            "y": lambda t: t.to(device),
        }
        return Dataset(
            *(move[key[0]](getattr(self, key)) for key in SPLIT_ARRAYS),
            num_classes=self.num_classes,
        )


SPLIT_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def load_dataset(data_cfg) -> Dataset:
    """Load the dataset named by `data.name`; raise DataError (a ConfigError) when its files are
    absent or malformed."""
    name = DataName(data_cfg.name) if not isinstance(data_cfg.name, DataName) else data_cfg.name
    if name is DataName.mnist1d:
        _check_mnist1d_training_size(data_cfg.mnist1d)
        arrays = load_mnist1d(data_cfg.mnist1d, data_cfg.root)
        return Dataset(*(arrays[key] for key in MNIST1D_ARRAYS), num_classes=MNIST1D_CLASSES)
    if name is DataName.digits:
        x, y, test = _digits()
    elif name is DataName.npz:
        x, y, test = read_npz(data_cfg.path)
    else:
        x, y, test = read_torchvision(name, data_cfg.root)
    train, val = validation_split(y, data_cfg.val_fraction, data_cfg.split_seed)
    x_test, y_test, num_classes = test
    if (
        name not in TORCHVISION_SETS
    ):  # scalar z-scores from the training part (torchvision: per-channel, applied)
        mean, std = x[train].mean(), x[train].std().clamp_min(1e-8)
        x, x_test = (x - mean) / std, (x_test - mean) / std
    return Dataset(x[train], y[train], x[val], y[val], x_test, y_test, num_classes)


def _check_mnist1d_training_size(mnist1d_cfg) -> None:
    count = training_size(mnist1d_cfg)
    if count < MIN_SAMPLES:
        raise ConfigError(
            f"data.mnist1d.num_samples={mnist1d_cfg.num_samples} with data.mnist1d.train_split="
            f"{mnist1d_cfg.train_split} keeps {count} training signals; the training set needs at least "
            f"{MIN_SAMPLES}: raise either value"
        )


def check_data_available(data_cfg) -> None:
    """Fail fast, before any work, when the data the config names is not on disk."""
    name = DataName(data_cfg.name) if not isinstance(data_cfg.name, DataName) else data_cfg.name
    if name is DataName.npz:
        npz_file(data_cfg.path)
    elif name in TORCHVISION_SETS:
        torchvision_root(name, data_cfg.root)


def digits_test_indices() -> list[int]:
    """The recorded, fixed test split of scikit-learn's digits (stratified 30% per class: 539 of
    1,797 images)."""
    text = resources.files("pdiff.resources").joinpath(DIGITS_SPLIT_FILE).read_text()
    return json.loads(text)["test_indices"]


def _digits() -> tuple[torch.Tensor, torch.Tensor, TestPart]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    test = torch.tensor(digits_test_indices())
    is_train = torch.ones(len(y), dtype=torch.bool)
    is_train[test] = False
    return x[is_train], y[is_train], (x[test], y[test], 10)


TEST_SPLIT_KEYS = (
    "mnist1d.test_seed",
    "mnist1d.test_samples",
)  # data.* settings that only the test split reads
