"""The torchvision data sources (MNIST, CIFAR-10, CIFAR-100), read from data.root, never
downloaded; images normalised per channel."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from pdiff.config import DataName
from pdiff.data.cifar import read_cifar
from pdiff.data.splits import TestPart
from pdiff.errors import ConfigError, DataError, one_line

# Each source's torchvision class, its folder under data.root, and its per-channel mean and std
TORCHVISION_SETS = {
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


def _download_hint(cls_name: str, root) -> str:
    return (
        f'download it once on a machine with internet: python -c "import torchvision; '
        f"torchvision.datasets.{cls_name}(root='{root or 'DIR'}', download=True)\" and set data.root=DIR"
    )


def torchvision_root(name: DataName, root) -> Path:
    """data.root, holding source `name`; ConfigError when it is not set, DataError when the source's
    folder is not there."""
    cls_name, subdir, _, _ = TORCHVISION_SETS[name]
    how = _download_hint(cls_name, root)
    if not root:
        raise ConfigError(
            f"data.root is not set: task data {name.value} is read from data.root; {how}"
        )
    expected = Path(root).expanduser() / subdir
    if not expected.exists():
        raise DataError(f"data.root={str(root)!r}: {name.value} not found at {expected}; {how}")
    return Path(root).expanduser()


def read_torchvision(name: DataName, root) -> tuple[torch.Tensor, torch.Tensor, TestPart]:
    """(x_train, y_train, test part) of source `name` under data.root, normalised per channel;
    DataError when its files cannot be read."""
    import torchvision

    cls_name, subdir, mean, std = TORCHVISION_SETS[name]
    directory = torchvision_root(name, root)
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
        raise DataError(
            f"data.root={str(root)!r}: {name.value} at {directory / subdir} cannot be read "
            f"({one_line(error)}); {_download_hint(cls_name, root)}"
        ) from error
    tensors = []
    for images, labels in arrays:  # images uint8 [N, C, H, W]
        x = torch.as_tensor(images, dtype=torch.float32) / 255.0
        x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        tensors += [x.contiguous(), torch.as_tensor(labels, dtype=torch.int64)]
    x_train, y_train, x_test, y_test = tensors
    return x_train, y_train, (x_test, y_test, classes)
