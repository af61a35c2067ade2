"""The Generator interface: train from a zoo, save to a folder, load from it, sample N parameter vectors."""

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
from pdiff.config import ConfigError
from pdiff.params import ParamNormalizer, ParamSpec
from pdiff.tracking import Tracker
from pdiff.zoo import ParamZoo

GENERATOR_META = "generator.json"
AE_WEIGHTS = "autoencoder.safetensors"
DENOISER_WEIGHTS = "denoiser_ema.safetensors"
DENOISER_RAW_WEIGHTS = "denoiser.safetensors"
PhaseTimer = Callable[[str], None]  # called with a phase name ("train_autoencoder", ...) when it ends


@dataclass(frozen=True)
class Conditioning:
    """What generation aims at (generate.target_acc, percent) and how hard (generate.guidance)."""

    target_acc: float
    guidance: float = 1.0

    @classmethod
    def from_config(cls, generate_cfg, zoo_accuracy: torch.Tensor) -> Conditioning | None:
        """generate.target_acc, or generate.target_quantile of the zoo's accuracies; None when neither is set."""
        if generate_cfg.target_quantile is not None:
            target = float(torch.quantile(zoo_accuracy.double(), float(generate_cfg.target_quantile)))
        elif generate_cfg.target_acc is not None:
            target = float(generate_cfg.target_acc)
        else:
            return None
        return cls(target, float(generate_cfg.guidance))


class Generator(ABC):
    """A trained parameter generator. Subclasses are the designs; the pipeline sees only this interface."""

    design: ClassVar[str]  # the name users select: generator=<design>
    uses: ClassVar[dict[str, tuple[str, ...]]]  # config group -> the options of it this design takes
    conditions: ClassVar[bool] = False  # whether it can aim at generate.target_acc (with generator.condition)

    @classmethod
    def check_config(cls, cfg) -> None:
        """ConfigError when a group option the design uses belongs to another design (designs add their checks)."""
        from pdiff.generators.registry import DESIGNS

        for group, allowed in cls.uses.items():
            name = getattr(cfg[group].name, "value", cfg[group].name)
            if name not in allowed:
                owners = [other for other, design in DESIGNS.items() if name in design.uses.get(group, ())]
                hint = f" ({group}={name} belongs to generator={owners[0]})" if owners else ""
                raise ConfigError(f"{group}={name} does not fit generator={cls.design}; allowed: "
                                  f"{', '.join(f'{group}={option}' for option in allowed)}{hint}")
        for key in ("target_acc", "target_quantile"):
            if cfg.generate[key] is not None and not (cls.conditions and cfg.generator.get("condition")):
                raise ConfigError(f"generate.{key}={cfg.generate[key]} needs a generator trained on the "
                                  "checkpoints' accuracies: generator=flow generator.condition=true (generator="
                                  f"{cls.design}{' does not condition' if not cls.conditions else ' without it'})")

    @classmethod
    @abstractmethod
    def train(cls, zoo: ParamZoo, cfg, directory: Path, tracker: Tracker, timer: PhaseTimer,
              device: torch.device) -> Generator:
        """Train on `device` on every rank of the launch (checkpoints under `directory`); every rank returns it."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, spec: ParamSpec, cfg, device: torch.device) -> Generator:
        """The generator that `save` wrote to `directory`, for vectors laid out as `spec`, on `device`."""

    @abstractmethod
    def sample(self, n: int, sampler_cfg, seed: int, conditioning: Conditioning | None = None) -> torch.Tensor:
        """n new parameter vectors [n, D] on the CPU (raw, not normalised), from the run seed `seed`; aimed at
        `conditioning` by a design that `conditions` (check_config refuses it for the others)."""

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
        """Weights first, then generator.json (whose presence marks the generator complete)."""
        for name, tensors in self.files().items():
            atomic.write_safetensors(directory / name, {key: value.cpu() for key, value in tensors.items()})
        atomic.write_json(directory / GENERATOR_META, {**run_meta, **self.meta, "design": self.design})

    def parameter_count(self) -> int:
        return sum(p.numel() for module in self.networks().values() for p in module.parameters())


def generator_exists(directory: Path) -> bool:
    return (Path(directory) / GENERATOR_META).is_file()


def read_meta(directory: Path) -> dict:
    return json.loads((Path(directory) / GENERATOR_META).read_text())


def autoencoder_file_state(normalizer: ParamNormalizer, autoencoder: nn.Module) -> dict[str, torch.Tensor]:
    """What AE_WEIGHTS holds: the autoencoder's and the normaliser's tensors under their own prefixes."""
    state = {f"autoencoder.{k}": v for k, v in autoencoder.state_dict().items()}
    state.update({f"normalizer.{k}": v for k, v in normalizer.state_dict().items()})
    return state


class AutoencoderDenoiserGenerator(Generator):
    """A design made of a normaliser + autoencoder and a denoiser (the EMA one samples; the raw one is kept
    after training, to be saved). Subclasses are dataclasses holding these four fields."""

    normalizer: ParamNormalizer
    autoencoder: nn.Module
    denoiser: nn.Module
    raw_denoiser: nn.Module | None

    def networks(self) -> dict[str, nn.Module]:
        return {"autoencoder": self.autoencoder, "denoiser": self.denoiser}

    def files(self) -> dict[str, dict[str, torch.Tensor]]:
        files = {AE_WEIGHTS: autoencoder_file_state(self.normalizer, self.autoencoder),
                 DENOISER_WEIGHTS: self.denoiser.state_dict()}
        if self.raw_denoiser is not None:
            files[DENOISER_RAW_WEIGHTS] = self.raw_denoiser.state_dict()
        return files


def load_autoencoder_file(directory: Path, normalizer: ParamNormalizer, autoencoder: nn.Module) -> None:
    """Fill `normalizer` and `autoencoder` in place from DIR/AE_WEIGHTS."""
    state = atomic.read_safetensors(Path(directory) / AE_WEIGHTS)
    for prefix, module in (("normalizer.", normalizer), ("autoencoder.", autoencoder)):
        module.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})


def trained_pair(build: Callable[[], nn.Module], fitted) -> tuple[nn.Module, nn.Module]:
    """(raw, EMA) networks in eval mode from a Fitted result that kept an EMA."""
    pair = []
    for weights in (fitted.weights, fitted.ema_weights):
        network = build()
        network.load_state_dict(weights)
        pair.append(network.eval())
    return pair[0], pair[1]
