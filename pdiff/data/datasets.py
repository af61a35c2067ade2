"""Datasets as in-memory tensors: embedded digits, MNIST-1D (built offline), your npz, torchvision
from data.root.

Every task has three splits. Validation is never trained on: it is carved from the training arrays
(stratified, seeded by data.split_seed) or, for MNIST-1D, generated apart. Test labels are read only
by the evaluate stage.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import pickle
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from pdiff.config import DataName
from pdiff.data.cifar import read_cifar
from pdiff.data.mnist1d import ARRAYS as MNIST1D_ARRAYS
from pdiff.data.mnist1d import CLASSES as MNIST1D_CLASSES
from pdiff.data.mnist1d import load_mnist1d, training_size
from pdiff.errors import ConfigError, DataError
from pdiff.seeds import Purpose, generator_for

DIGITS_SPLIT_FILE = "digits_split.json"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
MIN_SAMPLES = 10  # fewest training or test samples of a dataset: accuracies over fewer say nothing

_TORCHVISION = {
    DataName.mnist: ("MNIST", "MNIST/raw", (0.1307,), (0.3081,)),
    DataName.cifar10: (
        "CIFAR10",
        "cifar-10-batches-py",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    DataName.cifar100: (
        "CIFAR100",
        "cifar-100-python",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}


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
    """Load the dataset named by `data.name`; raise ConfigError when its files are absent or
    malformed."""
    name = DataName(data_cfg.name) if not isinstance(data_cfg.name, DataName) else data_cfg.name
    if name is DataName.mnist1d:
        _check_mnist1d_training_size(data_cfg.mnist1d)
        arrays = load_mnist1d(data_cfg.mnist1d, data_cfg.root)
        return Dataset(*(arrays[key] for key in MNIST1D_ARRAYS), num_classes=MNIST1D_CLASSES)
    if name is DataName.digits:
        x, y, test = _digits()
    elif name is DataName.npz:
        x, y, test = _npz(data_cfg.path)
    else:
        x, y, test = _torchvision(name, data_cfg.root)
    train, val = validation_split(y, data_cfg.val_fraction, data_cfg.split_seed)
    x_test, y_test, num_classes = test
    if (
        name not in _TORCHVISION
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


def validation_split(
    y: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of training labels `y`: round(fraction x count) of each class
    held out, drawn by a permutation seeded `seed`; both in increasing order. ConfigError when
    either part would be empty."""
    generator = torch.Generator().manual_seed(int(seed))
    held = []
    for label in torch.unique(y).tolist():
        members = torch.nonzero(y == label).flatten()
        count = int(round(fraction * len(members)))
        held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    val = torch.cat(held).sort().values
    is_train = torch.ones(len(y), dtype=torch.bool)
    is_train[val] = False
    if not len(val) or not is_train.any():
        raise ConfigError(
            f"data.val_fraction={fraction} holds out {len(val)} of {len(y)} training samples for "
            "validation: both validation and training need at least one; choose a value in (0, 1), or "
            "give more training samples, so that some of each class fall on both sides"
        )
    return torch.nonzero(is_train).flatten(), val


def check_data_available(data_cfg) -> None:
    """Fail fast, before any work, when the data the config names is not on disk."""
    name = DataName(data_cfg.name) if not isinstance(data_cfg.name, DataName) else data_cfg.name
    if name is DataName.npz:
        _npz_path(data_cfg.path)
    elif name in _TORCHVISION:
        _torchvision_root(name, data_cfg.root)


def digits_test_indices() -> list[int]:
    """The recorded, fixed test split of scikit-learn's digits (stratified 30% per class: 539 of
    1,797 images)."""
    text = resources.files("pdiff.resources").joinpath(DIGITS_SPLIT_FILE).read_text()
    return json.loads(text)["test_indices"]


TestPart = tuple[torch.Tensor, torch.Tensor, int]  # x_test, y_test, number of classes


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


def _npz_path(path) -> Path:
    if not path:
        raise ConfigError(
            "data.path is not set: data.name=npz needs data.path=FILE.npz "
            f"holding arrays {', '.join(NPZ_KEYS)}"
        )
    file = Path(path).expanduser()
    if file.is_dir():
        raise ConfigError(
            f"data.path={str(path)!r} is a folder: give the .npz file itself, holding arrays "
            f"{', '.join(NPZ_KEYS)}"
        )
    if not file.is_file():
        raise ConfigError(
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
    file = _npz_path(path)
    save = f"save one with numpy.savez(path, {'=..., '.join(NPZ_KEYS)}=...)"
    if file.stat().st_size == 0:
        raise ConfigError(
            f"data.path={str(path)!r} is an empty file (0 bytes), not an .npz archive; {save}"
        )
    readable_errors = (OSError, EOFError, ValueError, zipfile.BadZipFile)
    try:
        archive = np.load(file, allow_pickle=False)
    except readable_errors as error:
        raise ConfigError(
            f"data.path={str(path)!r} is not a readable .npz archive ({_one_line(error)}); {save}"
        ) from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ConfigError(
            f"data.path={str(path)!r} is a single array of shape {archive.shape} (numpy.save), not an "
            f".npz archive of named arrays; {save}"
        )
    with archive:
        missing = [key for key in NPZ_KEYS if key not in archive]
        if missing:
            raise ConfigError(
                f"data.path={str(path)!r} lacks arrays {missing}; it must hold {', '.join(NPZ_KEYS)}"
            )
        try:
            return {key: archive[key] for key in NPZ_KEYS}
        except readable_errors as error:
            raise ConfigError(
                f"data.path={str(path)!r} is not a readable .npz archive ({_one_line(error)}); "
                f"{save}"
            ) from error


def _one_line(error: Exception) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


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
            raise ConfigError(
                f"{where}: array {key} has dtype {array.dtype}; {what} (bool, int or float dtype)"
            )
        bad = int(np.size(array) - np.isfinite(array).sum())
        if bad:
            raise ConfigError(
                f"{where}: array {key} holds {bad} non-finite values (NaN or inf) of {np.size(array)}; "
                "clean the data"
            )


def _check_npz_shapes(where: str, arrays: dict[str, np.ndarray]) -> None:
    for key in ("x_train", "x_test"):
        shape = arrays[key].shape
        if len(shape) < 2 or 0 in shape[1:]:
            raise ConfigError(
                f"{where}: {key} has shape {shape}; inputs must be an array [N, *input_shape] of at "
                "least 2 dimensions, one non-empty row per sample (N samples of one value: "
                "x.reshape(-1, 1))"
            )
    for key in ("y_train", "y_test"):
        shape = arrays[key].shape
        if len(shape) != 1:
            raise ConfigError(
                f"{where}: {key} has shape {shape}; labels must be a 1-D array [N] of integer class "
                "indices (one-hot labels: save y.argmax(1))"
            )
    x_train, y_train, x_test, y_test = (arrays[key].shape for key in NPZ_KEYS)
    if x_train[1:] != x_test[1:] or x_train[0] != y_train[0] or x_test[0] != y_test[0]:
        raise ConfigError(
            f"{where}: inconsistent shapes x_train {x_train}, y_train {y_train}, x_test {x_test}, "
            f"y_test {y_test}; x_train and x_test need the same sample shape, each y one label per row"
        )
    for key, use in (
        ("x_train", "to train on and to hold validation samples out of"),
        ("x_test", "for the test accuracies of the report and its verdict"),
    ):
        if len(arrays[key]) < MIN_SAMPLES:
            raise ConfigError(
                f"{where}: {key} has {len(arrays[key])} samples; it needs at least {MIN_SAMPLES} {use}"
            )


def _check_class_indices(where: str, key: str, labels: np.ndarray) -> None:
    fractional = (
        labels != np.round(labels)
        if labels.dtype.kind == "f"
        else np.zeros(labels.shape, dtype=bool)
    )
    if fractional.any():
        raise ConfigError(
            f"{where}: {key} holds {int(fractional.sum())} non-integral labels (e.g. "
            f"{labels[fractional].flat[0]!r}); labels must be class indices 0, 1, 2, ..."
        )
    if labels.min() < 0:
        raise ConfigError(
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
        raise ConfigError(
            f"{where}: y_train holds label {largest}, but only {len(present)} distinct labels (class "
            f"{absent} has no sample); labels must be class indices 0..C-1 with every class present in "
            "y_train (renumber them: np.unique(y, return_inverse=True)[1])"
        )
    if int(y_test.max()) > largest:
        raise ConfigError(
            f"{where}: y_test holds label {int(y_test.max())}, a class no training sample has "
            f"(y_train's classes are 0..{largest}); every test label must be one of them"
        )
    if largest < 1:
        raise ConfigError(f"{where}: the labels hold a single class; at least 2 are needed")
    return largest + 1


def _npz(path) -> tuple[torch.Tensor, torch.Tensor, TestPart]:
    arrays = _npz_arrays(path)
    num_classes = _npz_classes(f"data.path={str(path)!r}", arrays["y_train"], arrays["y_test"])
    x_train, x_test = (
        torch.from_numpy(arrays[k].astype(np.float32)) for k in ("x_train", "x_test")
    )
    y_train, y_test = (torch.from_numpy(arrays[k].astype(np.int64)) for k in ("y_train", "y_test"))
    return x_train, y_train, (x_test, y_test, num_classes)


def _download_hint(cls_name: str, root) -> str:
    return (
        f'download it once on a machine with internet: python -c "import torchvision; '
        f"torchvision.datasets.{cls_name}(root='{root or 'DIR'}', download=True)\" and set data.root=DIR"
    )


def _torchvision_root(name: DataName, root) -> Path:
    cls_name, subdir, _, _ = _TORCHVISION[name]
    how = _download_hint(cls_name, root)
    if not root:
        raise ConfigError(
            f"data.root is not set: task data {name.value} is read from data.root; {how}"
        )
    expected = Path(root).expanduser() / subdir
    if not expected.exists():
        raise ConfigError(f"data.root={str(root)!r}: {name.value} not found at {expected}; {how}")
    return Path(root).expanduser()


def _torchvision(name: DataName, root) -> tuple[torch.Tensor, torch.Tensor, TestPart]:
    import torchvision

    cls_name, subdir, mean, std = _TORCHVISION[name]
    directory = _torchvision_root(name, root)
    cls = getattr(torchvision.datasets, cls_name)
    try:
        if name is DataName.mnist:
            splits = [
                cls(root=str(directory), train=train, download=False) for train in (True, False)
            ]
            arrays = [
                (np.asarray(split.data)[:, None], np.asarray(split.targets)) for split in splits
            ]
            classes = len(splits[0].classes)
        else:
            x_train, y_train, x_test, y_test, classes = read_cifar(directory / subdir, cls)
            arrays = [(x_train, y_train), (x_test, y_test)]
    except DataError:
        raise  # a malformed CIFAR file: the message names the file and the rule
    except (
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        KeyError,
        pickle.UnpicklingError,
    ) as error:  # absent/corrupt
        raise ConfigError(
            f"data.root={str(root)!r}: {name.value} at {directory / subdir} cannot be read "
            f"({_one_line(error)}); {_download_hint(cls_name, root)}"
        ) from error
    tensors = []
    for images, labels in arrays:  # images uint8 [N, C, H, W]
        x = torch.as_tensor(images, dtype=torch.float32) / 255.0
        x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        tensors += [x.contiguous(), torch.as_tensor(labels, dtype=torch.int64)]
    x_train, y_train, x_test, y_test = tensors
    return x_train, y_train, (x_test, y_test, classes)


@dataclass(frozen=True)
class Augmentation:
    """What `data.augment` and `data.rotate_degrees` ask for, applied to a batch with a CPU
    generator."""

    rotate_degrees: float = 0.0
    pad: int = 4

    @classmethod
    def from_config(cls, data_cfg) -> Augmentation | None:
        """The augmentation of `data`, or None when data.augment is false."""
        return cls(float(data_cfg.rotate_degrees)) if data_cfg.augment else None

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment_batch(x, generator, self.pad, self.rotate_degrees)


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, pad: int = 4, rotate_degrees: float = 0.0
) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, per image ([B, C, H, W] in, same out, on
    x's device), then a random rotation in [-rotate_degrees, rotate_degrees] when that is > 0
    (bilinear, zero fill).

    Every random number is drawn by the CPU `generator` and moved, so the batch is the same on every
    device.
    """
    batch, _, height, width = x.shape
    device = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(device)
    dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(device)
    rows = (dy.view(-1, 1) + torch.arange(height, device=device)).view(batch, 1, height, 1)
    cols = (dx.view(-1, 1) + torch.arange(width, device=device)).view(batch, 1, 1, width)
    batch_idx = torch.arange(batch, device=device).view(batch, 1, 1, 1)
    channel_idx = torch.arange(x.shape[1], device=device).view(1, -1, 1, 1)
    out = padded[batch_idx, channel_idx, rows, cols]
    flip = (torch.rand(batch, generator=generator) < 0.5).to(device)
    out = torch.where(
        flip.view(-1, 1, 1, 1), out.flip(-1), out
    )  # no boolean indexing: no host sync
    if rotate_degrees <= 0:
        return out
    angle = (torch.rand(batch, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(
        rotate_degrees
    )
    cos, sin = angle.cos().float().to(device), angle.sin().float().to(device)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = torch.nn.functional.affine_grid(
        theta.to(out.dtype), list(out.shape), align_corners=False
    )
    return torch.nn.functional.grid_sample(
        out, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the training batch at a global step: a fresh permutation per epoch, set by (seed,
    epoch)."""
    steps_per_epoch = max(n // batch_size, 1)
    epoch, index = divmod(step, steps_per_epoch)
    return _epoch_order(n, seed, epoch)[index * batch_size : (index + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """One epoch's permutation, drawn once (token zoos have millions of rows)."""
    return torch.randperm(n, generator=generator_for(seed, Purpose.epoch_order, epoch))
