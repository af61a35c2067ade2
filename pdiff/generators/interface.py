"""The Generator interface: train from a zoo, save to a folder, load from it, sample N parameter
vectors; and what every design uses to fulfil it: the files that mark a trained generator, the checks
of a training budget, the (raw, EMA) networks of a fit."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from pdiff import atomic
from pdiff.config import require
from pdiff.errors import GeneratorError
from pdiff.tracking import Tracker
from pdiff.zoo.params import ParamSpec
from pdiff.zoo.store import ParamZoo

GENERATOR_META = "generator.json"
GENERATOR_CHECKSUMS = "checksums.json"
PhaseTimer = Callable[
    [str], None
]  # called with a phase name ("train_autoencoder", ...) when it ends


@dataclass(frozen=True)
class Conditioning:
    """What generation aims at (generate.target_acc, percent; or, in a zoo of many tasks, each
    model's task descriptor [n, d]) and how hard (generate.guidance)."""

    target_acc: float | None
    guidance: float = 1.0
    descriptors: torch.Tensor | None = None

    @classmethod
    def from_config(cls, generate_cfg, zoo_accuracy: torch.Tensor) -> Conditioning | None:
        """generate.target_acc, or generate.target_quantile of the zoo's accuracies; None when
        neither is set."""
        if generate_cfg.target_quantile is not None:
            target = float(
                torch.quantile(zoo_accuracy.double(), float(generate_cfg.target_quantile))
            )
        elif generate_cfg.target_acc is not None:
            target = float(generate_cfg.target_acc)
        else:
            return None
        return cls(target, float(generate_cfg.guidance))


class Generator(ABC):
    """A trained parameter generator. Subclasses are the designs; the pipeline sees only this
    interface.

    A design declares what it owns: the group options it takes (`uses`), the config groups its
    training reads besides its own `generator` node (`reads`, the train stage's provenance), its
    training phases (`phases`: the `name` it passes to pdiff.training.fit.fit -> the title of its
    training-curve panel) and its config schemas (`schemas`: group -> schema name -> dataclass,
    stored in Hydra's ConfigStore when it registers).
    """

    design: ClassVar[str]  # the name users select: generator=<design>
    uses: ClassVar[
        dict[str, tuple[str, ...]]
    ]  # config group -> the options of it this design takes
    reads: ClassVar[tuple[str, ...]]  # config groups its training reads, besides generator
    phases: ClassVar[dict[str, str]]  # metric prefix of each training phase -> its panel title
    schemas: ClassVar[dict[str, dict[str, type]]] = {}
    condition_setting: ClassVar[str] = ""  # how to train it on accuracies (empty: it cannot be)

    @classmethod
    def conditioned(cls, cfg) -> bool:
        """Whether `cfg` trains it on the checkpoints' accuracies (generate.target_acc, guidance)."""
        return False

    @classmethod
    @abstractmethod
    def check_config(cls, cfg) -> None:
        """ConfigError for a value of the design's own config that cannot work (the registry checked
        `uses`)."""

    @classmethod
    @abstractmethod
    def train(
        cls,
        zoo: ParamZoo,
        cfg,
        directory: Path,
        tracker: Tracker,
        timer: PhaseTimer,
        device: torch.device,
    ) -> Generator:
        """Train on `device` on every rank of the launch (checkpoints under `directory`); every rank
        returns it."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, spec: ParamSpec, cfg, device: torch.device) -> Generator:
        """The generator that `save` wrote to `directory`, for vectors laid out as `spec`, on
        `device`."""

    @abstractmethod
    def sample(
        self, n: int, sampler_cfg, seed: int, conditioning: Conditioning | None = None
    ) -> torch.Tensor:
        """n new parameter vectors [n, D] on the CPU (raw, not normalised), from the run seed
        `seed`; aimed at `conditioning` by a design that `conditions` (check_config refuses it for
        the others)."""

    @abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """The trained networks by role (for counting and inspection)."""

    @abstractmethod
    def files(self) -> dict[str, dict[str, torch.Tensor]]:
        """What `save` writes: file name -> tensors."""

    @property
    @abstractmethod
    def meta(self) -> dict:
        """What the design records in generator.json (and reads back in `load`)."""

    def save(self, directory: Path, run_meta: dict) -> None:
        """Weights first, then their checksums, then generator.json (whose presence marks the
        generator complete)."""
        for name, tensors in self.files().items():
            atomic.write_safetensors(
                directory / name, {key: value.cpu() for key, value in tensors.items()}
            )
        atomic.write_json(
            directory / GENERATOR_CHECKSUMS,
            {name: atomic.sha256(directory / name) for name in self.files()},
        )
        atomic.write_json(
            directory / GENERATOR_META, {**run_meta, **self.meta, "design": self.design}
        )

    def parameter_count(self) -> int:
        return sum(p.numel() for module in self.networks().values() for p in module.parameters())


def generator_exists(directory: Path) -> bool:
    return (Path(directory) / GENERATOR_META).is_file()


def verify_generator(directory: Path) -> None:
    """GeneratorError unless `directory` holds a complete generator whose files match their
    checksums."""
    directory = Path(directory)
    if not generator_exists(directory):
        raise GeneratorError(
            f"no trained generator in {directory} ({GENERATOR_META} is missing): run stage=train "
            "first"
        )
    if not (directory / GENERATOR_CHECKSUMS).is_file():
        raise GeneratorError(
            f"{directory} has no {GENERATOR_CHECKSUMS} (its files cannot be checked): delete it and "
            "run stage=train again"
        )
    checksums = json.loads((directory / GENERATOR_CHECKSUMS).read_text())
    for name, digest in checksums.items():
        path = directory / name
        if not path.is_file():
            raise GeneratorError(
                f"{path} is missing from the trained generator: delete {directory} and run "
                "stage=train again"
            )
        if atomic.sha256(path) != digest:
            raise GeneratorError(
                f"{path} does not match its checksum in {directory / GENERATOR_CHECKSUMS}: the file "
                f"is corrupted; delete {directory} and run stage=train again"
            )


def read_meta(directory: Path) -> dict:
    return json.loads((Path(directory) / GENERATOR_META).read_text())


def check_training(node, key: str) -> None:
    """ConfigError for an `optim` / `cadence` pair (a training phase's budget) at config path `key`
    that cannot work."""
    optim, cadence = node.optim, node.cadence
    for name, value in (
        ("optim.steps", optim.steps),
        ("optim.batch_size", optim.batch_size),
        ("cadence.log_every", cadence.log_every),
        ("cadence.save_every", cadence.save_every),
    ):
        require(value >= 1, f"{key}.{name}", value, "must be >= 1")
    require(optim.lr > 0, f"{key}.optim.lr", optim.lr, "must be > 0")
    require(
        optim.weight_decay >= 0, f"{key}.optim.weight_decay", optim.weight_decay, "must be >= 0"
    )
    require(
        0 <= optim.warmup_steps <= optim.steps,
        f"{key}.optim.warmup_steps",
        optim.warmup_steps,
        f"must be in [0, {key}.optim.steps={optim.steps}]",
    )


def check_ema(decay: float, key: str) -> None:
    require(0.0 <= decay < 1.0, key, decay, "must be in [0, 1)")


def trained_pair(build: Callable[[], nn.Module], fitted) -> tuple[nn.Module, nn.Module]:
    """(raw, EMA) networks in eval mode from a Fitted result that kept an EMA."""
    pair = []
    for weights in (fitted.weights, fitted.ema_weights):
        network = build()
        network.load_state_dict(weights)
        pair.append(network.eval())
    return pair[0], pair[1]
