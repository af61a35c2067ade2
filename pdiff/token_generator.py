"""The large-D generator (`ae=token`): token autoencoder + windowed latent diffusion, trained, saved, sampled.

    zoo [K, D] (memory map) --tokens of S values, per-tensor z-scores--> [K, T, S]
        --shared token encoder--> latents [K, T, C] --cut into windows of W tokens--> [K * T/W, W, C]
        --DDPM on windows, each token told its tensor and position--> sampled windows --decoder--> [N, D]

Training reads random (model, token) rows from the memory-mapped zoo, so the autoencoder's memory does
not depend on D; the denoiser sees one window at a time. Windows are sampled independently, each
conditioned on where its tokens sit in the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pdiff import atomic
from pdiff.config import Normalization, Sampler
from pdiff.diffusion import GaussianDiffusion
from pdiff.generator import (
    AE_WEIGHTS,
    DENOISER_RAW_WEIGHTS,
    DENOISER_WEIGHTS,
    GENERATOR_META,
    autoencoder_file_state,
    build_diffusion,
    load_autoencoder_file,
)
from pdiff.nets.token_nets import TokenAutoencoder, WindowDenoiser
from pdiff.noise import BatchNoise
from pdiff.params import ParamNormalizer, ParamSpec
from pdiff.progress import stage_progress
from pdiff.tokens import TokenBatch, TokenLayout, ZooTokens
from pdiff.tracking import Tracker
from pdiff.train import fit

ENCODE_CHUNK = 8192  # tokens per encoder/decoder call


@dataclass
class WindowBatch:
    latents: torch.Tensor  # [B, W, C]
    tensor_ids: torch.Tensor  # [B, W]
    positions: torch.Tensor  # [B, W]

    def __len__(self) -> int:
        return len(self.latents)


class WindowPlaces:
    """Tokens grouped in windows of W: tensor index and position per slot, padding marked as tensor `num_tensors`."""

    def __init__(self, layout: TokenLayout, window: int):
        self.window = window
        self.count = -(-layout.count // window)
        pad = self.count * window - layout.count
        self.tensor_ids = F.pad(layout.tensor_ids, (0, pad), value=layout.num_tensors).view(self.count, window)
        self.positions = F.pad(layout.positions, (0, pad)).view(self.count, window)

    def split(self, latents: torch.Tensor) -> torch.Tensor:
        """Token latents [K, T, C] -> windows [K * count, W, C] (zero padding at the end)."""
        pad = self.count * self.window - latents.shape[1]
        return F.pad(latents, (0, 0, 0, pad)).reshape(-1, self.window, latents.shape[-1])


class WindowRows:
    """Windows of every zoo model as training rows (row r = model r // count, window r % count)."""

    def __init__(self, windows: torch.Tensor, places: WindowPlaces):
        self.windows, self.places = windows, places

    def __len__(self) -> int:
        return len(self.windows)

    def take(self, rows: torch.Tensor, dtype: torch.dtype) -> WindowBatch:
        slots = rows % self.places.count
        return WindowBatch(self.windows[rows].to(dtype), self.places.tensor_ids[slots], self.places.positions[slots])


def build_token_autoencoder(ae_cfg, num_tensors: int) -> TokenAutoencoder:
    return TokenAutoencoder(ae_cfg.token_size, num_tensors, ae_cfg.latent_dim, list(ae_cfg.hidden), ae_cfg.embed_dim,
                            ae_cfg.input_noise, ae_cfg.latent_noise)


def build_window_denoiser(diffusion_cfg, latent_dim: int, num_tensors: int) -> WindowDenoiser:
    return WindowDenoiser(latent_dim, num_tensors, diffusion_cfg.width, diffusion_cfg.depth, diffusion_cfg.heads,
                          diffusion_cfg.time_dim)


def token_reconstruction_loss(forward, batch: TokenBatch, noise: BatchNoise) -> torch.Tensor:
    """p-diff's autoencoder loss on tokens: MSE between a token and the reconstruction of its noised version."""
    return F.mse_loss(forward(batch.values, batch.tensor_ids, batch.positions, noise), batch.values)


def window_diffusion_loss(diffusion: GaussianDiffusion):
    def loss(forward, batch: WindowBatch, noise: BatchNoise) -> torch.Tensor:
        return diffusion.training_losses(lambda x_t, t: forward(x_t, t, batch.tensor_ids, batch.positions),
                                         batch.latents, noise)
    return loss


@dataclass
class TokenGenerator:
    normalizer: ParamNormalizer
    layout: TokenLayout
    autoencoder: TokenAutoencoder
    denoiser: WindowDenoiser  # the EMA weights
    diffusion: GaussianDiffusion
    latent_scale: float
    places: WindowPlaces

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled token latents [N, T, C] -> parameter vectors [N, D]."""
        out = torch.zeros(len(latents), self.layout.spec.dim)
        for model, model_latents in enumerate(latents):
            for tokens in torch.arange(self.layout.count).split(ENCODE_CHUNK):
                values = self.autoencoder.decode(model_latents[tokens] * self.latent_scale,
                                                 self.layout.tensor_ids[tokens], self.layout.positions[tokens])
                self.layout.scatter(values, tokens, out[model], self.normalizer)
        return out

    @torch.no_grad()
    def sample(self, n: int, diffusion_cfg, seed: int, chunk_windows: int = 512) -> torch.Tensor:
        """n parameter vectors [n, D]: every window of every model sampled from the EMA denoiser, then decoded."""
        rng = torch.Generator().manual_seed(seed)
        sampler = Sampler(diffusion_cfg.sampler)
        steps = self.diffusion.timesteps if sampler is Sampler.ddpm else len(
            self.diffusion.ddim_timesteps(diffusion_cfg.ddim_steps))
        slots = torch.arange(n * self.places.count) % self.places.count
        chunks = slots.split(chunk_windows)
        windows = []
        with stage_progress(f"sample {n} models ({len(slots)} windows, {sampler.value})",
                            total=steps * len(chunks)) as bar:
            for chunk in chunks:
                ids, positions = self.places.tensor_ids[chunk], self.places.positions[chunk]

                def model(x_t, t, ids=ids, positions=positions):
                    return self.denoiser(x_t, t, ids, positions)
                shape = (len(chunk), self.places.window, self.autoencoder.latent_dim)
                if sampler is Sampler.ddpm:
                    windows.append(self.diffusion.p_sample_loop(model, shape, generator=rng, progress=bar.advance))
                else:
                    windows.append(self.diffusion.ddim_sample_loop(model, shape, diffusion_cfg.ddim_steps,
                                                                   eta=diffusion_cfg.ddim_eta, generator=rng,
                                                                   progress=bar.advance))
        latents = torch.cat(windows).view(n, -1, self.autoencoder.latent_dim)[:, :self.layout.count]
        return self.decode(latents)


def train_token_autoencoder(vectors, spec: ParamSpec, ae_cfg, trainer_cfg, seed: int, directory: Path,
                            tracker: Tracker) -> tuple[ParamNormalizer, TokenLayout, TokenAutoencoder]:
    """Normaliser from the zoo (one tensor at a time), then the shared token autoencoder on random tokens."""
    normalizer = ParamNormalizer.fit(spec, vectors, Normalization(ae_cfg.normalization))
    layout = TokenLayout(spec, ae_cfg.token_size)
    torch.manual_seed(seed)
    fitted = fit(build_token_autoencoder(ae_cfg, layout.num_tensors), token_reconstruction_loss,
                 ZooTokens(vectors, layout, normalizer), ae_cfg.optim, trainer_cfg, name="ae", seed=seed,
                 checkpoint_dir=directory / "ae_checkpoint", tracker=tracker)
    autoencoder = build_token_autoencoder(ae_cfg, layout.num_tensors)
    autoencoder.load_state_dict(fitted.weights)
    return normalizer, layout, autoencoder.eval()


@torch.no_grad()
def encode_token_latents(vectors, normalizer: ParamNormalizer, layout: TokenLayout, autoencoder: TokenAutoencoder
                         ) -> tuple[torch.Tensor, float, float]:
    """Latents [K, T, C] of every zoo token scaled to unit std, the scale, and the normalised reconstruction MSE."""
    latents = torch.empty(len(vectors), layout.count, autoencoder.latent_dim)
    squared_error, count = 0.0, 0
    for model in range(len(vectors)):
        for tokens in torch.arange(layout.count).split(ENCODE_CHUNK):
            batch = layout.gather(vectors, torch.full_like(tokens, model), tokens, normalizer)
            latents[model, tokens] = autoencoder.encode(batch.values, batch.tensor_ids, batch.positions)
            recon = autoencoder.decode(latents[model, tokens], batch.tensor_ids, batch.positions)
            _, valid = layout.columns(tokens)
            squared_error += float(((recon - batch.values)[valid] ** 2).sum())
            count += int(valid.sum())
    scale = float(latents.std().clamp_min(1e-8))
    return latents / scale, scale, squared_error / max(count, 1)


def train_window_denoiser(latents: torch.Tensor, places: WindowPlaces, num_tensors: int, diffusion_cfg, trainer_cfg,
                          seed: int, directory: Path, tracker: Tracker) -> tuple[WindowDenoiser, WindowDenoiser]:
    """DDPM on windows of token latents; returns (raw, EMA) denoisers."""
    torch.manual_seed(seed + 1)
    diffusion = build_diffusion(diffusion_cfg)
    latent_dim = latents.shape[-1]
    fitted = fit(build_window_denoiser(diffusion_cfg, latent_dim, num_tensors), window_diffusion_loss(diffusion),
                 WindowRows(places.split(latents), places), diffusion_cfg.optim, trainer_cfg, name="diffusion",
                 seed=seed + 1, checkpoint_dir=directory / "diffusion_checkpoint", tracker=tracker,
                 ema_decay=diffusion_cfg.ema_decay)
    denoisers = []
    for weights in (fitted.weights, fitted.ema_weights):
        denoiser = build_window_denoiser(diffusion_cfg, latent_dim, num_tensors)
        denoiser.load_state_dict(weights)
        denoisers.append(denoiser.eval())
    return denoisers[0], denoisers[1]


def train_token_generator(vectors, spec: ParamSpec, ae_cfg, diffusion_cfg, trainer_cfg, seed: int, directory: Path,
                          tracker: Tracker, timer) -> tuple[dict, dict]:
    """Train both parts; returns the weights to save and their metadata (rank 0 writes them)."""
    normalizer, layout, autoencoder = train_token_autoencoder(vectors, spec, ae_cfg, trainer_cfg, seed, directory,
                                                              tracker)
    timer("train_autoencoder")
    latents, scale, recon_mse = encode_token_latents(vectors, normalizer, layout, autoencoder)
    tracker.log({"ae/recon_mse_normalized": recon_mse})
    places = WindowPlaces(layout, diffusion_cfg.window)
    denoiser, ema_denoiser = train_window_denoiser(latents, places, layout.num_tensors, diffusion_cfg, trainer_cfg,
                                                   seed, directory, tracker)
    timer("train_diffusion")
    weights = {AE_WEIGHTS: autoencoder_file_state(normalizer, autoencoder), DENOISER_RAW_WEIGHTS: denoiser.state_dict(),
               DENOISER_WEIGHTS: ema_denoiser.state_dict()}
    return weights, {"design": "token", "latent_scale": scale, "tokens": layout.count, "windows": places.count,
                     "recon_mse_normalized": recon_mse}


def save_token_generator(directory: Path, weights: dict, meta: dict) -> None:
    for name, state in weights.items():
        atomic.write_safetensors(directory / name, state)
    atomic.write_json(directory / GENERATOR_META, meta)


def load_token_generator(directory: Path, spec: ParamSpec, ae_cfg, diffusion_cfg) -> TokenGenerator:
    meta = json.loads((directory / GENERATOR_META).read_text())
    layout = TokenLayout(spec, ae_cfg.token_size)
    normalizer, autoencoder = ParamNormalizer(spec.dim), build_token_autoencoder(ae_cfg, layout.num_tensors)
    load_autoencoder_file(directory, normalizer, autoencoder)
    denoiser = build_window_denoiser(diffusion_cfg, ae_cfg.latent_dim, layout.num_tensors)
    denoiser.load_state_dict(atomic.read_safetensors(directory / DENOISER_WEIGHTS))
    return TokenGenerator(normalizer, layout, autoencoder.eval(), denoiser.eval(), build_diffusion(diffusion_cfg),
                          float(meta["latent_scale"]), WindowPlaces(layout, diffusion_cfg.window))
