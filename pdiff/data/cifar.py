"""CIFAR-10 and CIFAR-100 read from torchvision's own folders (cifar-10-batches-py,
cifar-100-python).

The files are the release's pickled batches: a dict with `data` (N x 3072 uint8, channel-major 32x32
images) and `labels` (CIFAR-10) or `fine_labels` (CIFAR-100), plus a meta file naming the classes.
torchvision's classes would read them too, but they refuse any folder whose files differ from the
release's MD5 sums: a subset, a re-pack, or a rehearsal folder a test builds. pdiff reads the same
files (names from torchvision's classes) itself, with an unpickler that loads nothing but numpy
arrays and plain containers, and checks their shapes, pixels and labels. A file that is there but
malformed is a DataError naming the file and the rule; an absent one is an OSError.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from pdiff.errors import DataError

# What a CIFAR pickle may name: numpy's array reconstruction (numpy 1 and 2 spell the module
# differently), and the calls through which a pickle of protocol 2 writes bytes (codecs for some,
# bytes() for none: an empty batch).
_ALLOWED = {
    ("_codecs", "encode"),
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}
PIXELS = 3 * 32 * 32


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: a CIFAR batch holds only arrays and lists"
            )
        return super().find_class(module, name)


def _load(path: Path) -> dict:
    """The dict a CIFAR file holds; DataError naming the file when it is not a readable pickle of
    one."""
    with open(path, "rb") as handle:
        try:
            entry = _ArraysOnly(handle, encoding="latin1").load()
        except (EOFError, pickle.UnpicklingError) as error:
            if isinstance(error, EOFError) or "truncated" in str(error):
                raise DataError(
                    f"{path} ends early (truncated or empty): copy it again from the CIFAR release"
                ) from None
            raise DataError(
                f"{path} is not a CIFAR batch ({type(error).__name__}: {error}); a batch is a pickled "
                "dict of arrays and lists"
            ) from None
        except (ValueError, TypeError, AttributeError, ImportError, IndexError) as error:
            raise DataError(
                f"{path} is not a CIFAR batch ({type(error).__name__}: {error}); a batch is a pickled "
                "dict of arrays and lists"
            ) from None
    if not isinstance(entry, dict):
        raise DataError(f"{path} holds a {type(entry).__name__}, not a CIFAR batch (a dict)")
    return entry


def _field(path: Path, entry: dict, key: str):
    if key not in entry:
        raise DataError(
            f"{path} has no {key!r} entry (it holds {sorted(map(str, entry))}); a CIFAR batch holds "
            "'data' and its labels"
        )
    return entry[key]


def _pixels(path: Path, data) -> np.ndarray:
    """N x 3072 uint8 images; DataError unless every value is an integer in 0..255."""
    array = np.asarray(data)
    if array.dtype.kind not in "iu" or (array.size and (array.min() < 0 or array.max() > 255)):
        values = (
            f"{array.min()}..{array.max()}"
            if array.size and array.dtype.kind in "iuf"
            else "values"
        )
        raise DataError(
            f"{path}: data holds {array.dtype} {values}; pixels must be integers in 0..255 (uint8)"
        )
    return array.astype(np.uint8)


def _labels(path: Path, labels) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise DataError(
            f"{path}: labels of dtype {array.dtype} and shape {array.shape}; labels must be a list of "
            "integer class indices"
        )
    return array.astype(np.int64)


def _batches(folder: Path, files: list[list[str]], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name, _ in files:
        path = folder / name
        entry = _load(path)
        data, targets = (
            _pixels(path, _field(path, entry, "data")),
            _labels(path, _field(path, entry, label_key)),
        )
        if data.size == 0 and len(targets) == 0:
            continue  # an empty batch adds nothing
        if data.ndim != 2 or data.shape[1] != PIXELS or len(targets) != len(data):
            raise DataError(
                f"{path}: data {data.shape} and {len(targets)} labels; a batch holds N x {PIXELS} values "
                "(3 x 32 x 32 images) and N labels"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(targets)
    if not images:
        return np.zeros((0, 3, 32, 32), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    return np.concatenate(images), np.concatenate(labels)


def read_cifar(
    folder: Path, torchvision_class
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(x_train, y_train, x_test, y_test, classes) from `folder` (e.g. ROOT/cifar-100-python), laid
    out as `torchvision_class` (torchvision.datasets.CIFAR10 or CIFAR100) expects; images are uint8
    [N, 3, 32, 32]. Raises OSError for an absent file, DataError naming the file for a malformed
    one."""
    meta = torchvision_class.meta
    meta_path = folder / meta["filename"]
    names = _field(meta_path, _load(meta_path), meta["key"])
    classes = len(names)
    label_key = "fine_labels" if meta["key"] == "fine_label_names" else "labels"
    x_train, y_train = _batches(folder, torchvision_class.train_list, label_key)
    x_test, y_test = _batches(folder, torchvision_class.test_list, label_key)
    for split, labels in (("train", y_train), ("test", y_test)):
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(
                f"{folder}: {split} labels span {labels.min()}..{labels.max()}, outside the {classes} "
                f"classes {meta_path.name} names"
            )
    if y_train.size and y_train.max() + 1 != classes:
        raise DataError(
            f"{meta_path} names {classes} classes ({meta['key']}) but the training labels span "
            f"0..{y_train.max()}: the names must match the labels, one name per class"
        )
    return x_train, y_train, x_test, y_test, classes
