"""What the latent and token designs share: a normaliser + autoencoder and a DDPM denoiser on its
latents; their config schemas, weight files, checks and the denoiser's fit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import MISSING
from torch import nn

from pdiff import atomic
from pdiff.config import CadenceConfig, Normalization, OptimConfig, SamplerName, require
from pdiff.generators.interface import Generator, check_ema, check_training, trained_pair
from pdiff.seeds import Purpose, derive_seed
from pdiff.tracking import Tracker
from pdiff.training.fit import fit
from pdiff.zoo.params import ParamNormalizer


@dataclass
class AutoencoderConfig:
    """What every parameter autoencoder has: normalisation, p-diff's two noises, its optimisation."""

    name: str = MISSING
    normalization: Normalization = Normalization.per_coordinate
    input_noise: float = 0.001
    latent_noise: float = 0.1
    optim: OptimConfig = field(default_factory=OptimConfig)
    cadence: CadenceConfig = field(default_factory=CadenceConfig)


@dataclass
class DiffusionConfig:
    """The DDPM schedule, the EMA of the denoiser and how the denoiser is optimised
    (generator=latent|token)."""

    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    ema_decay: float = 0.999
    optim: OptimConfig = field(default_factory=OptimConfig)
    cadence: CadenceConfig = field(default_factory=CadenceConfig)


@dataclass
class DDPMSamplerConfig:
    name: SamplerName = SamplerName.ddpm  # ancestral sampling over all diffusion.timesteps


@dataclass
class DDIMSamplerConfig:
    name: SamplerName = SamplerName.ddim
    steps: int = 60
    eta: float = 0.0


AE_WEIGHTS = "autoencoder.safetensors"
DENOISER_WEIGHTS = "denoiser_ema.safetensors"
DENOISER_RAW_WEIGHTS = "denoiser.safetensors"


def autoencoder_file_state(
    normalizer: ParamNormalizer, autoencoder: nn.Module
) -> dict[str, torch.Tensor]:
    """What AE_WEIGHTS holds: the autoencoder's and the normaliser's tensors under their own
    prefixes."""
    state = {f"autoencoder.{k}": v for k, v in autoencoder.state_dict().items()}
    state.update({f"normalizer.{k}": v for k, v in normalizer.state_dict().items()})
    return state


DDPM_SAMPLERS = {"ddpm_schema": DDPMSamplerConfig, "ddim_schema": DDIMSamplerConfig}
DIFFUSION_SCHEMAS = {"ddpm_schema": DiffusionConfig}


class AutoencoderDenoiserGenerator(Generator):
    """A design made of a normaliser + autoencoder and a denoiser (the EMA one samples; the raw one
    is kept after training, to be saved). Subclasses are dataclasses holding these four fields."""

    reads = ("ae", "denoiser", "diffusion")
    phases = {"ae": "Autoencoder (reconstruction)", "diffusion": "Latent DDPM (noise prediction)"}

    normalizer: ParamNormalizer
    autoencoder: nn.Module
    denoiser: nn.Module
    raw_denoiser: nn.Module | None

    @classmethod
    def check_config(cls, cfg) -> None:
        """The autoencoder's noises and budget, the DDPM schedule, its EMA and budget, and the DDIM
        steps."""
        ae, diffusion = cfg.ae, cfg.diffusion
        require(
            ae.input_noise >= 0.0 and ae.latent_noise >= 0.0,
            "ae.input_noise/latent_noise",
            (ae.input_noise, ae.latent_noise),
            "must be >= 0",
        )
        check_training(ae, "ae")
        require(
            diffusion.timesteps >= 2, "diffusion.timesteps", diffusion.timesteps, "must be >= 2"
        )
        require(
            0.0 < diffusion.beta_start < diffusion.beta_end < 1.0,
            "diffusion.beta_start/beta_end",
            (diffusion.beta_start, diffusion.beta_end),
            "need 0 < beta_start < beta_end < 1",
        )
        check_ema(diffusion.ema_decay, "diffusion.ema_decay")
        check_training(diffusion, "diffusion")
        if SamplerName(cfg.sampler.name) is SamplerName.ddim:
            require(
                1 <= cfg.sampler.steps <= diffusion.timesteps,
                "sampler.steps",
                cfg.sampler.steps,
                f"must be in [1, diffusion.timesteps={diffusion.timesteps}]",
            )
            require(cfg.sampler.eta >= 0.0, "sampler.eta", cfg.sampler.eta, "must be >= 0")

    def networks(self) -> dict[str, nn.Module]:
        return {"autoencoder": self.autoencoder, "denoiser": self.denoiser}

    def files(self) -> dict[str, dict[str, torch.Tensor]]:
        files = {
            AE_WEIGHTS: autoencoder_file_state(self.normalizer, self.autoencoder),
            DENOISER_WEIGHTS: self.denoiser.state_dict(),
        }
        if self.raw_denoiser is not None:
            files[DENOISER_RAW_WEIGHTS] = self.raw_denoiser.state_dict()
        return files


def load_autoencoder_file(
    directory: Path, normalizer: ParamNormalizer, autoencoder: nn.Module
) -> None:
    """Fill `normalizer` and `autoencoder` in place from DIR/AE_WEIGHTS."""
    state = atomic.read_safetensors(Path(directory) / AE_WEIGHTS)
    for prefix, module in (("normalizer.", normalizer), ("autoencoder.", autoencoder)):
        module.load_state_dict(
            {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        )


def fit_denoiser(
    cfg,
    build: Callable[[], nn.Module],
    loss,
    rows,
    directory: Path,
    tracker: Tracker,
    device: torch.device,
    name: str = "diffusion",
    budget=None,
) -> tuple[nn.Module, nn.Module]:
    """A DDPM denoiser of the latent and token designs, seeded for its purpose (`name`) and fitted
    on `rows` with the `optim` and `cadence` of `budget` (default `diffusion`) and
    diffusion.ema_decay (resumable from DIR/<name>_checkpoint): its (raw, EMA) networks in eval
    mode."""
    budget = cfg.diffusion if budget is None else budget
    seed = derive_seed(cfg.seed, Purpose.denoiser, 0 if name == "diffusion" else name)
    torch.manual_seed(seed)
    fitted = fit(
        build(),
        loss,
        rows,
        budget.optim,
        budget.cadence,
        cfg.trainer,
        name=name,
        seed=seed,
        checkpoint_dir=directory / f"{name}_checkpoint",
        tracker=tracker,
        ema_decay=cfg.diffusion.ema_decay,
        device=device,
        compile_forward=cfg.denoiser.compile,
    )
    return trained_pair(build, fitted)
