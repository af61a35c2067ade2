"""The parameter generator: normaliser + autoencoder + latent denoiser (EMA), trained, saved and loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pdiff import atomic
from pdiff.config import Normalization
from pdiff.diffusion import GaussianDiffusion, linear_betas
from pdiff.nets.autoencoder import ParamAutoencoder, build_autoencoder, reconstruction_loss
from pdiff.nets.denoiser import LatentDenoiser
from pdiff.params import ParamNormalizer
from pdiff.tracking import Tracker
from pdiff.train import fit
from pdiff.zoo import ParamZoo

AE_WEIGHTS = "autoencoder.safetensors"
DENOISER_WEIGHTS = "denoiser_ema.safetensors"
DENOISER_RAW_WEIGHTS = "denoiser.safetensors"
GENERATOR_META = "generator.json"


@dataclass
class ParamGenerator:
    normalizer: ParamNormalizer
    autoencoder: ParamAutoencoder
    denoiser: LatentDenoiser  # the EMA weights
    diffusion: GaussianDiffusion
    latent_scale: float

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [N, C, L] -> parameter vectors [N, D] (autoencoder in eval mode)."""
        self.autoencoder.eval()
        with torch.no_grad():
            return self.normalizer.denormalize(self.autoencoder.decode(latents * self.latent_scale))


def build_diffusion(diffusion_cfg) -> GaussianDiffusion:
    return GaussianDiffusion(linear_betas(diffusion_cfg.timesteps, diffusion_cfg.beta_start, diffusion_cfg.beta_end))


def build_denoiser(diffusion_cfg, latent_channels: int) -> LatentDenoiser:
    return LatentDenoiser(latent_channels, list(diffusion_cfg.channels), diffusion_cfg.time_dim)


def train_autoencoder(zoo: ParamZoo, ae_cfg, trainer_cfg, seed: int, directory: Path, tracker: Tracker
                      ) -> tuple[ParamNormalizer, ParamAutoencoder]:
    """Fit the normaliser on the zoo, then the autoencoder on normalised vectors (input + latent noise)."""
    normalizer = ParamNormalizer.fit(zoo.spec, zoo.vectors, Normalization(ae_cfg.normalization))
    data = normalizer.normalize(zoo.vectors)
    torch.manual_seed(seed)
    fitted = fit(build_autoencoder(ae_cfg, zoo.spec.dim), reconstruction_loss, data, ae_cfg.optim, trainer_cfg,
                 name="ae", seed=seed, checkpoint_dir=directory / "ae_checkpoint", tracker=tracker)
    autoencoder = build_autoencoder(ae_cfg, zoo.spec.dim)
    autoencoder.load_state_dict(fitted.weights)
    autoencoder.eval()
    with torch.no_grad():
        recon = autoencoder(data)
    tracker.log({"ae/recon_mse_normalized": float(((recon - data) ** 2).mean()),
                 "ae/recon_max_abs": float((normalizer.denormalize(recon) - zoo.vectors).abs().max())})
    return normalizer, autoencoder


def train_denoiser(latents: torch.Tensor, diffusion_cfg, trainer_cfg, seed: int, directory: Path, tracker: Tracker
                   ) -> tuple[LatentDenoiser, LatentDenoiser]:
    """DDPM epsilon-prediction training on latents [K, C, L]; returns (raw, EMA) denoisers."""
    torch.manual_seed(seed + 1)
    diffusion = build_diffusion(diffusion_cfg)
    fitted = fit(build_denoiser(diffusion_cfg, latents.shape[1]), diffusion.training_losses, latents,
                 diffusion_cfg.optim, trainer_cfg, name="diffusion", seed=seed + 1,
                 checkpoint_dir=directory / "diffusion_checkpoint", tracker=tracker, ema_decay=diffusion_cfg.ema_decay)
    denoisers = []
    for weights in (fitted.weights, fitted.ema_weights):
        denoiser = build_denoiser(diffusion_cfg, latents.shape[1])
        denoiser.load_state_dict(weights)
        denoisers.append(denoiser.eval())
    return denoisers[0], denoisers[1]


def encode_latents(normalizer: ParamNormalizer, autoencoder: ParamAutoencoder, vectors: torch.Tensor
                   ) -> tuple[torch.Tensor, float]:
    """Deterministic (eval-mode) latents of the zoo, scaled to unit standard deviation, and the scale."""
    autoencoder.eval()
    with torch.no_grad():
        latents = autoencoder.encode(normalizer.normalize(vectors))
    scale = float(latents.std().clamp_min(1e-8))
    return latents / scale, scale


def autoencoder_file_state(normalizer: ParamNormalizer, autoencoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What AE_WEIGHTS holds: the autoencoder's and the normaliser's tensors under their own prefixes."""
    state = {f"autoencoder.{k}": v for k, v in autoencoder.state_dict().items()}
    state.update({f"normalizer.{k}": v for k, v in normalizer.state_dict().items()})
    return state


def load_autoencoder_file(directory: Path, normalizer: ParamNormalizer, autoencoder: torch.nn.Module) -> None:
    """Fill `normalizer` and `autoencoder` in place from DIR/AE_WEIGHTS."""
    state = atomic.read_safetensors(directory / AE_WEIGHTS)
    for prefix, module in (("normalizer.", normalizer), ("autoencoder.", autoencoder)):
        module.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})


def save_generator(directory: Path, normalizer: ParamNormalizer, autoencoder: ParamAutoencoder,
                   denoiser: LatentDenoiser, ema_denoiser: LatentDenoiser, latent_scale: float, meta: dict) -> None:
    atomic.write_safetensors(directory / AE_WEIGHTS, autoencoder_file_state(normalizer, autoencoder))
    atomic.write_safetensors(directory / DENOISER_RAW_WEIGHTS, denoiser.state_dict())
    atomic.write_safetensors(directory / DENOISER_WEIGHTS, ema_denoiser.state_dict())
    atomic.write_json(directory / GENERATOR_META, dict(meta, latent_scale=latent_scale,
                                                       latent_shape=list(autoencoder.latent_shape)))


def load_generator(directory: Path, ae_cfg, diffusion_cfg, dim: int) -> ParamGenerator:
    meta = json.loads((directory / GENERATOR_META).read_text())
    normalizer, autoencoder = ParamNormalizer(dim), build_autoencoder(ae_cfg, dim)
    load_autoencoder_file(directory, normalizer, autoencoder)
    denoiser = build_denoiser(diffusion_cfg, autoencoder.latent_shape[0])
    denoiser.load_state_dict(atomic.read_safetensors(directory / DENOISER_WEIGHTS))
    return ParamGenerator(normalizer, autoencoder.eval(), denoiser.eval(), build_diffusion(diffusion_cfg),
                          float(meta["latent_scale"]))


def generator_exists(directory: Path) -> bool:
    return (directory / GENERATOR_META).is_file()
