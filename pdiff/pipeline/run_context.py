"""The run context every stage receives: the config, the output folder, the tracker, the device, the
job's own stages and the per-stage timings (timings.json); and the stage interface, JobStages: what
a job (the main job, pdiff.pipeline.main_stages; the held-out-task job,
pdiff.pipeline.heldout_stages) does where the stages differ between jobs. The generic stages call it
through Run.stages; pdiff.pipeline.run.job_for picks the job once per config."""

from __future__ import annotations

import fcntl
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from pdiff import atomic
from pdiff.config import Precision, Stage
from pdiff.data.datasets import Dataset, load_dataset
from pdiff.generators.interface import Generator
from pdiff.tracking import Tracker
from pdiff.training import distributed
from pdiff.training.devices import Execution, memory_format
from pdiff.zoo.store import ParamZoo

TIMINGS_FILE = "timings.json"


@dataclass
class Run:
    """One pipeline run: its config, output folder, tracker, its job's stages (the main job's or
    the held-out-task job's, picked once by pdiff.pipeline.run.job_for) and per-stage timings."""

    cfg: DictConfig
    output_dir: Path
    tracker: Tracker
    stages: JobStages
    env: distributed.DistEnv = field(default_factory=distributed.DistEnv)
    device: torch.device = field(
        default_factory=lambda: torch.device("cpu")
    )  # resolved once (training.devices)
    timings: dict[str, float] = field(default_factory=dict)
    _data: Dataset | None = None

    @property
    def data(self) -> Dataset:
        """The task's data on the run's device (loaded and moved once)."""
        if self._data is None:
            data = load_dataset(self.cfg.data)
            self._data = data.to(self.device, memory_format(self.device, data.x_train))
        return self._data

    @property
    def task_execution(self) -> Execution:
        """How the task network runs: task.precision (autocast) and task.compile."""
        return Execution(Precision(self.cfg.task.precision), bool(self.cfg.task.compile))

    def task_autocast(self):
        """Autocast for the task network's forward-only passes (task.precision) on this run's
        device."""
        return self.task_execution.autocast(self.device)

    def dir(self, name: str) -> Path:
        path = self.output_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def record_time(self, key: str, seconds: float) -> None:
        """Add `key` to timings.json."""
        self.timings[key] = seconds
        self._edit_times(lambda saved: {**saved, key: round(seconds, 6)})

    def saved_times(self) -> dict[str, float]:
        """timings.json as it is on disk."""
        path = self.output_dir / TIMINGS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def forget_times(self, keys: tuple[str, ...]) -> None:
        """Drop `keys` from timings.json (measurements of outputs that are being replaced)."""
        for key in keys:
            self.timings.pop(key, None)
        self._edit_times(
            lambda saved: {key: value for key, value in saved.items() if key not in keys}
        )

    def _edit_times(self, edit: Callable[[dict], dict]) -> None:
        """Rewrite timings.json as `edit` of its contents, under a lock (collection runs of one zoo
        may finish at once, as array tasks); rank 0 only, and only when something changes."""
        if not self.env.is_main:
            return
        path = self.output_dir / TIMINGS_FILE
        with open(path.with_name(f".{TIMINGS_FILE}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            saved = self.saved_times()
            edited = edit(saved)
            if edited != saved or not path.is_file():
                atomic.write_json(path, edited)

    def phase_timer(self):
        """A callback that records the time since the previous call (or since now) under each phase
        name."""
        started = time.perf_counter()

        def timer(key: str) -> None:
            nonlocal started
            self.record_time(key, time.perf_counter() - started)
            started = time.perf_counter()

        return timer


@dataclass(frozen=True)
class Samples:
    """What the generate stage writes: the models [n, D], the tensors beside them in
    params.safetensors, and what generated.json records of how they were aimed."""

    params: torch.Tensor
    extra: dict[str, torch.Tensor]
    tasks: list[int] | None = None
    target_acc: float | None = None
    guidance: float | None = None


class JobStages(ABC):
    """One job's own part of the stages: its config checks beyond pdiff.config.validate, its
    collection runs, what its zoo records, how it samples, and its evaluate stage."""

    @abstractmethod
    def check_design(self, cfg: DictConfig) -> None:
        """ConfigError for a design or counts this job cannot use (before pdiff.config.validate)."""

    @abstractmethod
    def check_generation(self, cfg: DictConfig, stages: list[Stage]) -> None:
        """ConfigError for generate settings that `stages` cannot generate or score."""

    @abstractmethod
    def check_collection(self, cfg: DictConfig, data: Dataset) -> None:
        """ConfigError for collection settings that cannot make this job's zoo of `data`."""

    @abstractmethod
    def collect_run(self, run: Run, index: int, path: Path, started: float) -> None:
        """Collection run `index` of task.collect.runs into `path` (its timing from `started`)."""

    @abstractmethod
    def zoo_meta(self, run: Run) -> dict:
        """What zoo.json records besides the collect stage's own keys."""

    @abstractmethod
    def sample(self, run: Run, generator: Generator, zoo: ParamZoo) -> Samples:
        """The generated models and what generated.json says of them."""

    @abstractmethod
    def evaluate(self, run: Run) -> dict:
        """The evaluate stage on checked generated models: writes the report, returns it."""
