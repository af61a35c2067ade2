"""MNIST-1D (Greydanus & Kobak), built offline by the `mnist1d` package and cached with a checksum.

`mnist1d.data.make_dataset` builds the arrays from the generation arguments and seed; its
`get_dataset` downloads, so it is never called. The training set is the published set's training
part (seed 42); the validation and test sets are generated apart from it, each from its own seed and
size. Each split is cached as DIR/mnist1d/mnist1d-<args hash>.safetensors with a JSON record of the
arguments, the package version and the file's SHA-256, checked on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from pdiff import atomic
from pdiff.errors import DataError

log = logging.getLogger(__name__)
ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
CLASSES = 10


def default_root() -> Path:
    """Where data is cached when data.root is not set: $XDG_CACHE_HOME/pdiff (~/.cache/pdiff)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pdiff"


def generation_args(mnist1d_cfg, split: str = "train") -> dict:
    """The package's default arguments (the published dataset) with data.mnist1d's values for
    `split`, minus its URL.

    train: the published set's training part; val and test: every signal of a set of their own size
    and seed.
    """
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)
    if split == "train":
        args.update(
            num_samples=int(mnist1d_cfg.num_samples),
            train_split=float(mnist1d_cfg.train_split),
            seed=int(mnist1d_cfg.seed),
        )
    else:
        args.update(
            num_samples=int(getattr(mnist1d_cfg, f"{split}_samples")),
            train_split=0.5,
            seed=int(getattr(mnist1d_cfg, f"{split}_seed")),
        )
    return args


def training_size(mnist1d_cfg) -> int:
    """How many signals the training set holds, without building it: make_dataset draws num_samples
    // 10 per class and keeps the first int(total x train_split) of them for training."""
    total = int(mnist1d_cfg.num_samples) // CLASSES * CLASSES
    return int(total * float(mnist1d_cfg.train_split))


def cache_paths(root: Path, args: dict, split: str = "train") -> tuple[Path, Path]:
    part = (
        "train" if split == "train" else "all"
    )  # the training part of the set, or all of its signals
    digest = hashlib.sha256(
        json.dumps({"args": args, "part": part}, sort_keys=True).encode()
    ).hexdigest()[:16]
    directory = Path(root).expanduser() / "mnist1d"
    return directory / f"mnist1d-{digest}.safetensors", directory / f"mnist1d-{digest}.json"


def load_mnist1d(mnist1d_cfg, root: str | None) -> dict[str, torch.Tensor]:
    """x_train [N, 40] float32, y_train [N] int64, x_val, y_val, x_test, y_test: each split read
    from its own cache file, built on first use."""
    arrays = {}
    for split in ("train", "val", "test"):
        x, y = _load_split(
            generation_args(mnist1d_cfg, split), split, Path(root) if root else default_root()
        )
        arrays.update({f"x_{split}": x, f"y_{split}": y})
    return arrays


def load_signals(args: dict, root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every signal of the set `args` describes (its training part, then its test part), cached
    and checked as the splits are: one task of a family of MNIST-1D variants."""
    return _load_split(args, "all", Path(root) if root else default_root())


def _load_split(args: dict, split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    tensors_path, record_path = cache_paths(root, args, split)
    if tensors_path.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("sha256") != atomic.sha256(tensors_path) or record.get("args") != args:
            raise DataError(
                f"the MNIST-1D cache {tensors_path} does not match {record_path.name} (checksum or "
                "generation arguments): it was changed or corrupted; delete both files to rebuild it"
            )
        tensors = atomic.read_safetensors(tensors_path)
        return tensors["x"], tensors["y"]
    tensors = _build(args, whole=split != "train")
    atomic.write_safetensors(tensors_path, tensors)
    atomic.write_json(
        record_path,
        {
            "args": args,
            "split": split,
            "mnist1d_version": metadata.version("mnist1d"),
            "sha256": atomic.sha256(tensors_path),
            "sizes": {k: list(v.shape) for k, v in tensors.items()},
        },
    )
    log.info(
        "MNIST-1D %s split built (seed %d, %d signals) and cached in %s",
        split,
        args["seed"],
        len(tensors["y"]),
        tensors_path,
    )
    return tensors["x"], tensors["y"]


def _build(args: dict, whole: bool) -> dict[str, torch.Tensor]:
    """The training part of the set `args` describes, or (whole) all of its signals. make_dataset
    seeds NumPy's and Python's global random state: both are restored afterwards."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    x, y = data["x"], data["y"]
    if whole:
        x, y = np.concatenate([x, data["x_test"]]), np.concatenate([y, data["y_test"]])
    return {"x": torch.from_numpy(x.astype(np.float32)), "y": torch.from_numpy(y.astype(np.int64))}
