"""The npz data source (data.name=npz): the file's four arrays, read and checked, and the digests of
its training and test parts.

Every problem with the file is a DataError naming data.path and the rule it breaks.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from pdiff.config import DataName
from pdiff.data.splits import MIN_SAMPLES, TestPart
from pdiff.errors import ConfigError, DataError, one_line

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_FINGERPRINTS: dict[tuple, str] = {}


def split_fingerprint(data_cfg, part: str) -> str | None:
    """The digest of one part ("train" or "test") of a data file's arrays (data.name=npz), read
    alone: the training part is an input of collection (a file rewritten at the same path is told
    from the one a zoo was made from), the test part of evaluation only, so no stage before it reads
    the test arrays. None for data that its settings define (digits, MNIST-1D from its seeds,
    torchvision folders) or a file that cannot be read (the data checks name it)."""
    name = DataName(data_cfg.name) if not isinstance(data_cfg.name, DataName) else data_cfg.name
    file = Path(str(data_cfg.path)).expanduser() if data_cfg.path else None
    if name is not DataName.npz or file is None or not file.is_file():
        return None
    stat = file.stat()
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size, part)
    if key not in _FINGERPRINTS:
        try:
            with np.load(
                file, allow_pickle=False
            ) as archive:  # an npz member is read only when it is indexed
                _FINGERPRINTS[key] = _arrays_digest(archive, part)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, AttributeError):
            return None
    return _FINGERPRINTS[key]


def _arrays_digest(archive, part: str) -> str:
    digest = hashlib.sha256()
    for key in (f"x_{part}", f"y_{part}"):
        array = np.ascontiguousarray(archive[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def npz_file(path) -> Path:
    """The file data.path names; ConfigError when it is not set, DataError when it is no file."""
    if not path:
        raise ConfigError(
            "data.path is not set: data.name=npz needs data.path=FILE.npz "
            f"holding arrays {', '.join(NPZ_KEYS)}"
        )
    file = Path(path).expanduser()
    if file.is_dir():
        raise DataError(
            f"data.path={str(path)!r} is a folder: give the .npz file itself, holding arrays "
            f"{', '.join(NPZ_KEYS)}"
        )
    if not file.is_file():
        raise DataError(
            f"data.path={str(path)!r} does not exist: give an .npz file holding arrays "
            f"{', '.join(NPZ_KEYS)}"
        )
    return file


def _npz_arrays(path) -> dict[str, np.ndarray]:
    """The four arrays of data.path, checked: real and finite, x [N, *input_shape], y [N] class
    indices."""
    arrays = _read_npz(path)
    where = f"data.path={str(path)!r}"
    _check_npz_values(where, arrays)
    _check_npz_shapes(where, arrays)
    for key in ("y_train", "y_test"):
        _check_class_indices(where, key, arrays[key])
    return arrays


def _read_npz(path) -> dict[str, np.ndarray]:
    file = npz_file(path)
    save = f"save one with numpy.savez(path, {'=..., '.join(NPZ_KEYS)}=...)"
    if file.stat().st_size == 0:
        raise DataError(
            f"data.path={str(path)!r} is an empty file (0 bytes), not an .npz archive; {save}"
        )
    readable_errors = (OSError, EOFError, ValueError, zipfile.BadZipFile)
    try:
        archive = np.load(file, allow_pickle=False)
    except readable_errors as error:
        raise DataError(
            f"data.path={str(path)!r} is not a readable .npz archive ({one_line(error)}); {save}"
        ) from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"data.path={str(path)!r} is a single array of shape {archive.shape} (numpy.save), not an "
            f".npz archive of named arrays; {save}"
        )
    with archive:
        missing = [key for key in NPZ_KEYS if key not in archive]
        if missing:
            raise DataError(
                f"data.path={str(path)!r} lacks arrays {missing}; it must hold {', '.join(NPZ_KEYS)}"
            )
        try:
            return {key: archive[key] for key in NPZ_KEYS}
        except readable_errors as error:
            raise DataError(
                f"data.path={str(path)!r} is not a readable .npz archive ({one_line(error)}); "
                f"{save}"
            ) from error


def _check_npz_values(where: str, arrays: dict[str, np.ndarray]) -> None:
    for key, array in arrays.items():
        if (
            array.dtype.kind not in "biuf"
        ):  # bool, signed, unsigned, float: complex parts would be dropped
            what = (
                "labels must be integer class indices"
                if key.startswith("y")
                else "inputs must be real numbers"
            )
            raise DataError(
                f"{where}: array {key} has dtype {array.dtype}; {what} (bool, int or float dtype)"
            )
        bad = int(np.size(array) - np.isfinite(array).sum())
        if bad:
            raise DataError(
                f"{where}: array {key} holds {bad} non-finite values (NaN or inf) of {np.size(array)}; "
                "clean the data"
            )


def _check_npz_shapes(where: str, arrays: dict[str, np.ndarray]) -> None:
    for key in ("x_train", "x_test"):
        shape = arrays[key].shape
        if len(shape) < 2 or 0 in shape[1:]:
            raise DataError(
                f"{where}: {key} has shape {shape}; inputs must be an array [N, *input_shape] of at "
                "least 2 dimensions, one non-empty row per sample (N samples of one value: "
                "x.reshape(-1, 1))"
            )
    for key in ("y_train", "y_test"):
        shape = arrays[key].shape
        if len(shape) != 1:
            raise DataError(
                f"{where}: {key} has shape {shape}; labels must be a 1-D array [N] of integer class "
                "indices (one-hot labels: save y.argmax(1))"
            )
    x_train, y_train, x_test, y_test = (arrays[key].shape for key in NPZ_KEYS)
    if x_train[1:] != x_test[1:] or x_train[0] != y_train[0] or x_test[0] != y_test[0]:
        raise DataError(
            f"{where}: inconsistent shapes x_train {x_train}, y_train {y_train}, x_test {x_test}, "
            f"y_test {y_test}; x_train and x_test need the same sample shape, each y one label per row"
        )
    for key, use in (
        ("x_train", "to train on and to hold validation samples out of"),
        ("x_test", "for the test accuracies of the report and its verdict"),
    ):
        if len(arrays[key]) < MIN_SAMPLES:
            raise DataError(
                f"{where}: {key} has {len(arrays[key])} samples; it needs at least {MIN_SAMPLES} {use}"
            )


def _check_class_indices(where: str, key: str, labels: np.ndarray) -> None:
    fractional = (
        labels != np.round(labels)
        if labels.dtype.kind == "f"
        else np.zeros(labels.shape, dtype=bool)
    )
    if fractional.any():
        raise DataError(
            f"{where}: {key} holds {int(fractional.sum())} non-integral labels (e.g. "
            f"{labels[fractional].flat[0]!r}); labels must be class indices 0, 1, 2, ..."
        )
    if labels.min() < 0:
        raise DataError(
            f"{where}: {key} holds label {int(labels.min())}; labels must be class indices 0, 1, 2, ... "
            "(>= 0)"
        )


def _npz_classes(where: str, y_train: np.ndarray, y_test: np.ndarray) -> int:
    """C, the number of classes: y_train holds each of 0..C-1 (so one stray large label cannot make
    C huge) and y_test only those."""
    largest = int(y_train.max())
    present = np.unique(y_train)
    if len(present) < largest + 1:
        absent = int(np.setdiff1d(np.arange(len(present) + 1), present)[0])
        raise DataError(
            f"{where}: y_train holds label {largest}, but only {len(present)} distinct labels (class "
            f"{absent} has no sample); labels must be class indices 0..C-1 with every class present in "
            "y_train (renumber them: np.unique(y, return_inverse=True)[1])"
        )
    if int(y_test.max()) > largest:
        raise DataError(
            f"{where}: y_test holds label {int(y_test.max())}, a class no training sample has "
            f"(y_train's classes are 0..{largest}); every test label must be one of them"
        )
    if largest < 1:
        raise DataError(f"{where}: the labels hold a single class; at least 2 are needed")
    return largest + 1


def read_npz(path) -> tuple[torch.Tensor, torch.Tensor, TestPart]:
    """(x_train, y_train, test part) of the npz file at data.path, checked, as float32 and int64."""
    arrays = _npz_arrays(path)
    num_classes = _npz_classes(f"data.path={str(path)!r}", arrays["y_train"], arrays["y_test"])
    x_train, x_test = (
        torch.from_numpy(arrays[k].astype(np.float32)) for k in ("x_train", "x_test")
    )
    y_train, y_test = (torch.from_numpy(arrays[k].astype(np.int64)) for k in ("y_train", "y_test"))
    return x_train, y_train, (x_test, y_test, num_classes)
