"""The parameter zoo on disk: a safetensors [K, D] matrix + JSON metadata, checked on load."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from pdiff import atomic
from pdiff.errors import ZooError
from pdiff.zoo.params import ParamSpec

ZOO_TENSORS = "zoo.safetensors"
ZOO_META = "zoo.json"
BASE_WEIGHTS = "base_model.safetensors"
CHECKED_FILES = (
    ZOO_TENSORS,
    BASE_WEIGHTS,
)  # the zoo's files later stages read, checked by their digest in zoo.json
FORMAT_VERSION = 2  # 2: per-checkpoint accuracy is validation accuracy (1 recorded test accuracy)


TASK_TENSORS = ("descriptor", "task", "task_seed")


@dataclass
class TaskRows:
    """Each checkpoint's task in a zoo of many tasks: its descriptor [K, d], its task id and its
    task seed [K]."""

    descriptor: torch.Tensor
    task: torch.Tensor
    task_seed: torch.Tensor

    @classmethod
    def read(cls, path: Path) -> TaskRows | None:
        if "task" not in atomic.safetensors_names(path):
            return None
        return cls(*(atomic.map_tensor(path, name).clone() for name in TASK_TENSORS))


@dataclass
class ParamZoo:
    """K checkpoints of a parameter subset, each with its validation accuracy (percent)."""

    vectors: (
        torch.Tensor
    )  # [K, D] float32, memory-mapped from zoo.safetensors: rows are read when used
    val_accuracy: torch.Tensor  # [K] float64, percent, on the validation split (never test)
    spec: ParamSpec
    meta: dict
    tasks: TaskRows | None = None  # a zoo of many tasks: each checkpoint's task

    @property
    def k(self) -> int:
        return int(self.vectors.shape[0])

    def best_by_validation(self, fraction: float) -> ParamZoo:
        """The best `fraction` of the checkpoints by validation accuracy (at least 2), in zoo order."""
        if fraction >= 1.0:
            return self
        keep = max(2, math.ceil(fraction * self.k))
        rows = self.val_accuracy.argsort(descending=True, stable=True)[:keep].sort().values
        tasks = (
            TaskRows(*(getattr(self.tasks, name)[rows] for name in TASK_TENSORS))
            if self.tasks
            else None
        )
        return ParamZoo(
            self.vectors[rows],
            self.val_accuracy[rows],
            self.spec,
            dict(self.meta, k=keep, trained_on=rows.tolist()),
            tasks,
        )

    @classmethod
    def merge(cls, directory: Path, runs: list[Path], spec: ParamSpec, meta: dict) -> ParamZoo:
        """Join collection runs row-wise into the zoo, streamed: the K x D matrix is never in memory
        at once."""
        directory = Path(directory)
        tensors_path = directory / ZOO_TENSORS
        many = "task" in atomic.safetensors_names(runs[0])
        atomic.concat_safetensors(
            tensors_path, runs, ["params", "val_accuracy", *(TASK_TENSORS if many else ())], {}
        )
        accuracy = atomic.map_tensor(tensors_path, "val_accuracy").clone()
        meta = dict(
            meta,
            format_version=FORMAT_VERSION,
            k=len(accuracy),
            dim=spec.dim,
            spec=spec.to_json(),
            val_accuracy=[round(float(a), 4) for a in accuracy],
            sha256={
                name: atomic.sha256(directory / name)
                for name in CHECKED_FILES
                if (directory / name).is_file()
            },
        )
        atomic.write_checked_json(directory / ZOO_META, meta)
        return cls(
            atomic.map_tensor(tensors_path, "params"),
            accuracy,
            spec,
            meta,
            TaskRows.read(tensors_path),
        )

    @classmethod
    def exists(cls, directory: Path) -> bool:
        return (Path(directory) / ZOO_META).is_file()

    @classmethod
    def load(cls, directory: Path) -> ParamZoo:
        """The checked zoo; `vectors` is a copy-on-write memory map [K, D] of the file, read on
        demand."""
        directory = Path(directory)
        meta_path, tensors_path = directory / ZOO_META, directory / ZOO_TENSORS
        if not meta_path.is_file() or not tensors_path.is_file():
            raise ZooError(
                f"no complete parameter zoo in {directory} (need {ZOO_META} and {ZOO_TENSORS}); "
                "run stage=collect first"
            )
        meta = atomic.read_checked_json(meta_path)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ZooError(
                f"{meta_path} has format_version {meta.get('format_version')}, this pdiff reads "
                f"{FORMAT_VERSION} (its checkpoints carry validation, not test, accuracies); re-run "
                "stage=collect into a new paths.output_dir"
            )
        for name, digest in {ZOO_TENSORS: None, **meta.get("sha256", {})}.items():
            if not (directory / name).is_file() or atomic.sha256(directory / name) != digest:
                raise ZooError(
                    f"{directory / name} does not match the checksum recorded in {meta_path}: the file is "
                    "missing, corrupted or was replaced; restore it, or re-run stage=collect into a new "
                    "paths.output_dir"
                )
        spec = ParamSpec.from_json(meta["spec"])
        vectors = atomic.map_tensor(tensors_path, "params")
        accuracy = atomic.map_tensor(tensors_path, "val_accuracy").clone()
        if tuple(vectors.shape) != (meta["k"], spec.dim) or accuracy.shape[0] != meta["k"]:
            raise ZooError(
                f"{tensors_path}: params {tuple(vectors.shape)} and val_accuracy {tuple(accuracy.shape)} "
                f"do not match k={meta['k']}, dim={spec.dim} in {meta_path}"
            )
        return cls(vectors, accuracy, spec, meta, TaskRows.read(tensors_path))


def run_sizes(k: int, runs: int) -> list[int]:
    """How many of the K checkpoints each collection run takes (the first K mod R take one more)."""
    return [k // runs + (index < k % runs) for index in range(runs)]


def run_path(directory: Path, index: int, runs: int) -> Path:
    """Collection run `index` of `runs`: its checkpoints, validation accuracies and steps
    (safetensors)."""
    return Path(directory) / "runs" / f"run-{index:04d}-of-{runs:04d}.safetensors"


def save_base_weights(directory: Path, state_dict: dict[str, torch.Tensor]) -> None:
    atomic.write_safetensors(Path(directory) / BASE_WEIGHTS, state_dict)


def load_base_weights(directory: Path) -> dict[str, torch.Tensor]:
    path = Path(directory) / BASE_WEIGHTS
    if not path.is_file():
        raise ZooError(f"base model weights {path} are missing; run stage=collect first")
    return atomic.read_safetensors(path)
