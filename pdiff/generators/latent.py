"""p-diff's design (generator=latent): a parameter autoencoder + a DDPM on its latents.

zoo [K, D] --normaliser--> [K, D] --autoencoder (input + latent noise)--> latents [K, C, L]
    --scaled to unit std, DDPM (conv1d denoiser, EMA)--> sampled latents --decoder--> [N, D]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pdiff import atomic
from pdiff.config import GeneratorConfig, Normalization, SamplerName
from pdiff.diffusion.gaussian import GaussianDiffusion, build_diffusion
from pdiff.errors import ConfigError
from pdiff.generators.autoencoder_ddpm import (
    DDPM_SAMPLERS,
    DENOISER_WEIGHTS,
    DIFFUSION_SCHEMAS,
    AutoencoderConfig,
    AutoencoderDenoiserGenerator,
    fit_denoiser,
    load_autoencoder_file,
)
from pdiff.generators.interface import Conditioning, PhaseTimer, read_meta
from pdiff.generators.nets.autoencoder import (
    ConvAutoencoderV1,
    ConvAutoencoderV2,
    MLPAutoencoder,
    ParamAutoencoder,
    reconstruction_loss,
)
from pdiff.generators.nets.denoiser import LatentDenoiser
from pdiff.generators.registry import register
from pdiff.seeds import Purpose, derive_seed, generator_for
from pdiff.tracking import Tracker, stage_progress
from pdiff.training.fit import fit
from pdiff.zoo.params import ParamNormalizer, ParamSpec
from pdiff.zoo.store import ParamZoo


@dataclass
class MLPAutoencoderConfig(AutoencoderConfig):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512, 256])
    latent_dim: int = (
        64  # values in the latent, seen as [latent_channels, latent_dim / latent_channels]
    )
    latent_channels: int = 4


@dataclass
class ConvV1AutoencoderConfig(AutoencoderConfig):
    name: str = "pdiff_v1"
    normalization: Normalization = Normalization.per_tensor
    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256])
    latent_channels: int = 4
    stride: int = 2


@dataclass
class ConvV2AutoencoderConfig(AutoencoderConfig):
    name: str = "pdiff_v2"
    normalization: Normalization = Normalization.per_tensor
    fold: int = 64
    channels: list[int] = field(default_factory=lambda: [128, 256])
    latent_dim: int = 128


@dataclass
class ConvDenoiserConfig:
    """p-diff's latent denoiser: 1-D conv encoder-decoder with additive skips."""

    name: str = "conv1d"
    channels: list[int] = field(default_factory=lambda: [32, 64])
    time_dim: int = 128
    compile: bool = False  # torch.compile the denoiser for training (trainer=plain) and sampling


def _mlp_autoencoder(ae_cfg, dim: int, noise: dict) -> ParamAutoencoder:
    return MLPAutoencoder(
        dim, list(ae_cfg.hidden), ae_cfg.latent_dim, ae_cfg.latent_channels, **noise
    )


def _conv_v1(ae_cfg, dim: int, noise: dict) -> ParamAutoencoder:
    return ConvAutoencoderV1(
        dim, list(ae_cfg.channels), ae_cfg.latent_channels, ae_cfg.stride, **noise
    )


def _conv_v2(ae_cfg, dim: int, noise: dict) -> ParamAutoencoder:
    return ConvAutoencoderV2(dim, ae_cfg.fold, list(ae_cfg.channels), ae_cfg.latent_dim, **noise)


AUTOENCODERS = {"mlp": _mlp_autoencoder, "pdiff_v1": _conv_v1, "pdiff_v2": _conv_v2}


def build_autoencoder(ae_cfg, dim: int) -> ParamAutoencoder:
    """The autoencoder that `ae` (mlp, pdiff_v1 or pdiff_v2) describes, for vectors of length `dim`."""
    return AUTOENCODERS[ae_cfg.name](
        ae_cfg, dim, {"input_noise": ae_cfg.input_noise, "latent_noise": ae_cfg.latent_noise}
    )


def build_denoiser(denoiser_cfg, latent_channels: int) -> LatentDenoiser:
    return LatentDenoiser(latent_channels, list(denoiser_cfg.channels), denoiser_cfg.time_dim)


@torch.no_grad()
def encode_latents(
    normalizer: ParamNormalizer, autoencoder: ParamAutoencoder, vectors: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Deterministic (eval-mode) latents of the zoo, scaled to unit standard deviation, and the
    scale."""
    autoencoder.eval()
    latents = autoencoder.encode(normalizer.normalize(vectors))
    scale = float(latents.std().clamp_min(1e-8))
    return latents / scale, scale


@register
@dataclass
class LatentGenerator(AutoencoderDenoiserGenerator):
    design = "latent"
    uses = {"ae": tuple(AUTOENCODERS), "denoiser": ("conv1d",), "sampler": ("ddpm", "ddim")}
    schemas = {
        "generator": {"generator_schema": GeneratorConfig},
        "ae": {
            "mlp_schema": MLPAutoencoderConfig,
            "pdiff_v1_schema": ConvV1AutoencoderConfig,
            "pdiff_v2_schema": ConvV2AutoencoderConfig,
        },
        "denoiser": {"conv1d_schema": ConvDenoiserConfig},
        "sampler": DDPM_SAMPLERS,
        "diffusion": DIFFUSION_SCHEMAS,
    }

    normalizer: ParamNormalizer
    autoencoder: ParamAutoencoder
    denoiser: LatentDenoiser  # the EMA weights: the ones that sample
    diffusion: GaussianDiffusion
    latent_scale: float
    raw_denoiser: LatentDenoiser | None = field(default=None)  # kept after training, to be saved
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    compile_denoiser: bool = False  # sample with torch.compile(denoiser)

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        ae = cfg.ae
        if "latent_channels" in ae and "latent_dim" in ae and ae.latent_dim % ae.latent_channels:
            raise ConfigError(
                f"ae.latent_dim={ae.latent_dim} is invalid: must be a multiple of "
                f"ae.latent_channels={ae.latent_channels}"
            )
        if "stride" in ae and ae.stride < 2:
            raise ConfigError(f"ae.stride={ae.stride} is invalid: must be >= 2")

    @classmethod
    def train(
        cls,
        zoo: ParamZoo,
        cfg,
        directory: Path,
        tracker: Tracker,
        timer: PhaseTimer,
        device: torch.device,
    ) -> LatentGenerator:
        """Both networks train on `device`; the zoo's latents (K small vectors) are encoded on the
        CPU."""
        normalizer, autoencoder = train_autoencoder(
            zoo,
            cfg.ae,
            cfg.trainer,
            derive_seed(cfg.seed, Purpose.autoencoder),
            directory,
            tracker,
            device,
        )
        timer("train_autoencoder")
        latents, scale = encode_latents(normalizer, autoencoder, zoo.vectors)
        diffusion = build_diffusion(cfg.diffusion)
        raw, ema = fit_denoiser(
            cfg,
            lambda: build_denoiser(cfg.denoiser, latents.shape[1]),
            diffusion.training_losses,
            latents,
            directory,
            tracker,
            device,
        )
        timer("train_diffusion")
        return cls(normalizer, autoencoder, ema, diffusion, scale, raw)

    @classmethod
    def load(cls, directory: Path, spec: ParamSpec, cfg, device: torch.device) -> LatentGenerator:
        normalizer, autoencoder = ParamNormalizer(spec.dim), build_autoencoder(cfg.ae, spec.dim)
        load_autoencoder_file(directory, normalizer, autoencoder)
        denoiser = build_denoiser(cfg.denoiser, autoencoder.latent_shape[0])
        denoiser.load_state_dict(atomic.read_safetensors(directory / DENOISER_WEIGHTS))
        return cls(
            normalizer.to(device),
            autoencoder.to(device).eval(),
            denoiser.to(device).eval(),
            build_diffusion(cfg.diffusion),
            float(read_meta(directory)["latent_scale"]),
            device=device,
            compile_denoiser=cfg.denoiser.compile,
        )

    @torch.no_grad()
    def sample(
        self, n: int, sampler_cfg, seed: int, conditioning: Conditioning | None = None
    ) -> torch.Tensor:
        """n vectors [n, D], all sampled as one batch from the EMA denoiser, then decoded."""
        shape = (n, *self.autoencoder.latent_shape)
        rng = generator_for(seed, Purpose.sampling)
        steps = self.diffusion.sample_steps(sampler_cfg)
        with stage_progress(
            f"sample {n} models ({SamplerName(sampler_cfg.name).value})", total=steps
        ) as bar:
            denoiser = torch.compile(self.denoiser) if self.compile_denoiser else self.denoiser
            latents = self.diffusion.sample(
                denoiser,
                shape,
                sampler_cfg,
                generator=rng,
                device=self.device,
                progress=bar.advance,
            )
        return self.decode(latents).cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [N, C, L] -> parameter vectors [N, D] (autoencoder in eval mode)."""
        self.autoencoder.eval()
        return self.normalizer.denormalize(self.autoencoder.decode(latents * self.latent_scale))

    @property
    def meta(self) -> dict:
        return {
            "latent_scale": self.latent_scale,
            "latent_shape": list(self.autoencoder.latent_shape),
        }


def train_autoencoder(
    zoo: ParamZoo,
    ae_cfg,
    trainer_cfg,
    seed: int,
    directory: Path,
    tracker: Tracker,
    device: torch.device,
) -> tuple[ParamNormalizer, ParamAutoencoder]:
    """Fit the normaliser on the zoo, then the autoencoder on normalised vectors (input + latent
    noise)."""
    normalizer = ParamNormalizer.fit(zoo.spec, zoo.vectors, Normalization(ae_cfg.normalization))
    data = normalizer.normalize(zoo.vectors)
    torch.manual_seed(seed)
    fitted = fit(
        build_autoencoder(ae_cfg, zoo.spec.dim),
        reconstruction_loss,
        data,
        ae_cfg.optim,
        ae_cfg.cadence,
        trainer_cfg,
        name="ae",
        seed=seed,
        checkpoint_dir=directory / "ae_checkpoint",
        tracker=tracker,
        device=device,
    )
    autoencoder = build_autoencoder(ae_cfg, zoo.spec.dim)
    autoencoder.load_state_dict(fitted.weights)
    autoencoder.eval()
    with torch.no_grad():
        recon = autoencoder(data)
    tracker.log(
        {
            "ae/recon_mse_normalized": float(((recon - data) ** 2).mean()),
            "ae/recon_max_abs": float((normalizer.denormalize(recon) - zoo.vectors).abs().max()),
        }
    )
    return normalizer, autoencoder
