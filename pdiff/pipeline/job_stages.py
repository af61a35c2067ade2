"""The stage interface: what a job (the main job, pdiff.pipeline.main_stages; the held-out-task job,
pdiff.pipeline.heldout_stages) does where the stages differ between jobs. The generic stages call it
through Run.stages; pdiff.pipeline.run.job_for picks the job once per config."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from pdiff.config import Stage
from pdiff.data.datasets import Dataset
from pdiff.generators.interface import Generator
from pdiff.pipeline.run_context import Run
from pdiff.zoo.store import ParamZoo


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
