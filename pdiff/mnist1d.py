"""MNIST-1D (Greydanus & Kobak), built offline by the `mnist1d` package and cached with a checksum.

`mnist1d.data.make_dataset` builds the arrays from the generation arguments and seed; its `get_dataset`
downloads, so it is never called. The cache is DIR/mnist1d/mnist1d-<args hash>.safetensors with a JSON
record of the arguments, the package version and the file's SHA-256, checked on every load.
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
from pdiff.config import ConfigError

log = logging.getLogger(__name__)
ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def default_root() -> Path:
    """Where data is cached when data.root is not set: $XDG_CACHE_HOME/pdiff (~/.cache/pdiff)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pdiff"


def generation_args(mnist1d_cfg) -> dict:
    """The package's default arguments (the published dataset) with data.mnist1d's values, minus its URL."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)
    args.update(num_samples=int(mnist1d_cfg.num_samples), train_split=float(mnist1d_cfg.train_split),
                seed=int(mnist1d_cfg.seed))
    return args


def cache_paths(root: Path, args: dict) -> tuple[Path, Path]:
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    directory = Path(root).expanduser() / "mnist1d"
    return directory / f"mnist1d-{digest}.safetensors", directory / f"mnist1d-{digest}.json"


def load_mnist1d(mnist1d_cfg, root: str | None) -> dict[str, torch.Tensor]:
    """x_train [N, 40] float32, y_train [N] int64, x_test, y_test: read from the cache, built on first use."""
    args = generation_args(mnist1d_cfg)
    tensors_path, record_path = cache_paths(Path(root) if root else default_root(), args)
    if tensors_path.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("sha256") != atomic.sha256(tensors_path) or record.get("args") != args:
            raise ConfigError(f"the MNIST-1D cache {tensors_path} does not match {record_path.name} (checksum or "
                              "generation arguments): it was changed or corrupted; delete both files to rebuild it")
        return atomic.read_safetensors(tensors_path)
    tensors = _build(args)
    atomic.write_safetensors(tensors_path, tensors)
    atomic.write_json(record_path, {"args": args, "mnist1d_version": metadata.version("mnist1d"),
                                    "sha256": atomic.sha256(tensors_path),
                                    "sizes": {k: list(v.shape) for k, v in tensors.items()}})
    log.info("MNIST-1D built (seed %d, %d samples) and cached in %s", args["seed"], args["num_samples"], tensors_path)
    return tensors


def _build(args: dict) -> dict[str, torch.Tensor]:
    """make_dataset seeds NumPy's and Python's global random state: both are restored afterwards."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return {"x_train": torch.from_numpy(data["x"].astype(np.float32)),
            "y_train": torch.from_numpy(data["y"].astype(np.int64)),
            "x_test": torch.from_numpy(data["x_test"].astype(np.float32)),
            "y_test": torch.from_numpy(data["y_test"].astype(np.int64))}
