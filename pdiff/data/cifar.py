"""CIFAR-10 and CIFAR-100 read from torchvision's own folders (cifar-10-batches-py, cifar-100-python).

The files are the release's pickled batches: a dict with `data` (N x 3072 uint8, channel-major 32x32 images) and
`labels` (CIFAR-10) or `fine_labels` (CIFAR-100), plus a meta file naming the classes. torchvision's classes would
read them too, but they refuse any folder whose files differ from the release's MD5 sums: a subset, a re-pack, or
a rehearsal folder a test builds. pdiff reads the same files (names from torchvision's classes) itself, with an
unpickler that loads nothing but numpy arrays and plain containers, and checks their shapes and labels.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

# What a CIFAR pickle may name: numpy's array reconstruction (numpy 1 and 2 spell the module differently), and
# the codec call through which a pickle of protocol 2 or 3 writes bytes.
_ALLOWED = {("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR batch holds only arrays and lists")
        return super().find_class(module, name)


def _load(path: Path) -> dict:
    with open(path, "rb") as handle:
        entry = _ArraysOnly(handle, encoding="latin1").load()
    if not isinstance(entry, dict):
        raise ValueError(f"{path.name} holds a {type(entry).__name__}, not a CIFAR batch (a dict)")
    return entry


def _batches(folder: Path, files: list[list[str]], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name, _ in files:
        entry = _load(folder / name)
        data = np.asarray(entry["data"], dtype=np.uint8)
        targets = np.asarray(entry[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(targets) != len(data):
            raise ValueError(f"{name}: data {data.shape} and {len(targets)} labels; a batch holds N x 3072 values "
                             "(3 x 32 x 32 images) and N labels")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(targets)
    return np.concatenate(images), np.concatenate(labels)


def read_cifar(folder: Path, torchvision_class) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(x_train, y_train, x_test, y_test, classes) from `folder` (e.g. ROOT/cifar-100-python), laid out as
    `torchvision_class` (torchvision.datasets.CIFAR10 or CIFAR100) expects; images are uint8 [N, 3, 32, 32].
    Raises OSError, ValueError, KeyError or pickle.UnpicklingError on absent or malformed files."""
    meta = torchvision_class.meta
    classes = len(_load(folder / meta["filename"])[meta["key"]])
    label_key = "fine_labels" if meta["key"] == "fine_label_names" else "labels"
    x_train, y_train = _batches(folder, torchvision_class.train_list, label_key)
    x_test, y_test = _batches(folder, torchvision_class.test_list, label_key)
    for split, labels in (("train", y_train), ("test", y_test)):
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise ValueError(f"{split} labels span {labels.min()}..{labels.max()}, outside the {classes} classes "
                             f"of {meta['filename']}")
    return x_train, y_train, x_test, y_test, classes
