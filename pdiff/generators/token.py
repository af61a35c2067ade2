"""pdiff's large-D design (generator=token): a token autoencoder + a DDPM on windows of token latents.

    zoo [K, D] (memory map) --tokens of S values, normalised--> [K, T, S]
        --shared token encoder--> latents [K, T, C] --cut into windows of W tokens--> [K * T/W, W, C]
        --DDPM on windows, each token told its tensor and position--> sampled windows --decoder--> [N, D]

Training reads random (model, token) rows from the memory-mapped zoo, so the autoencoder's memory does
not depend on D; the denoiser sees one window at a time. Windows are sampled independently, each
conditioned on where its tokens sit in the network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from pdiff import atomic
from pdiff.config import GeneratorConfig, Normalization, SamplerName
from pdiff.diffusion.gaussian import GaussianDiffusion, build_diffusion
from pdiff.diffusion.noise import BatchNoise
from pdiff.errors import ConfigError
from pdiff.generators.base import (
    DDPM_SAMPLERS,
    DENOISER_WEIGHTS,
    DIFFUSION_SCHEMAS,
    AutoencoderConfig,
    AutoencoderDenoiserGenerator,
    Conditioning,
    PhaseTimer,
    fit_denoiser,
    load_autoencoder_file,
    read_meta,
)
from pdiff.generators.nets.token_nets import TokenAutoencoder, WindowDenoiser
from pdiff.generators.registry import register
from pdiff.generators.tokens import TokenBatch, TokenLayout, ZooTokens
from pdiff.seeds import Purpose, derive_seed, generator_for
from pdiff.tracking import Tracker, stage_progress
from pdiff.training.fit import fit
from pdiff.zoo.params import ParamNormalizer, ParamSpec
from pdiff.zoo.store import ParamZoo


@dataclass
class TokenAutoencoderConfig(AutoencoderConfig):
    name: str = "token"
    normalization: Normalization = Normalization.per_tensor
    token_size: int = 64
    token_latent_dim: int = 8  # latent values per token
    embed_dim: int = 64
    hidden: list[int] = field(default_factory=lambda: [256, 256])


@dataclass
class WindowDenoiserConfig:
    """The token design's denoiser: a pre-norm transformer over windows of token latents."""

    name: str = "window"
    window: int = 64  # token latents per window
    width: int = 128
    depth: int = 2
    heads: int = 4
    time_dim: int = 128
    compile: bool = False  # torch.compile the denoiser for training (trainer=plain) and sampling


ENCODE_CHUNK = 8192  # tokens per encoder/decoder call
SAMPLE_CHUNK = 512  # windows sampled together


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

    def conditioning(self, slots: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """The denoiser's model_kwargs for windows at `slots` [B]: each token's tensor and position [B, W]."""
        return {"tensor_ids": self.tensor_ids[slots].to(device), "positions": self.positions[slots].to(device)}


class WindowRows:
    """Windows of every zoo model as training rows (row r = model r // count, window r % count)."""

    def __init__(self, windows: torch.Tensor, places: WindowPlaces):
        self.windows, self.places = windows, places

    def __len__(self) -> int:
        return len(self.windows)

    def take(self, rows: torch.Tensor, dtype: torch.dtype, device: torch.device) -> WindowBatch:
        slots = rows % self.places.count
        return WindowBatch(self.windows[rows].to(device=device, dtype=dtype), self.places.tensor_ids[slots].to(device),
                           self.places.positions[slots].to(device))


def build_token_autoencoder(ae_cfg, layout: TokenLayout) -> TokenAutoencoder:
    return TokenAutoencoder(ae_cfg.token_size, layout.num_tensors, ae_cfg.token_latent_dim, list(ae_cfg.hidden),
                            ae_cfg.embed_dim, ae_cfg.input_noise, ae_cfg.latent_noise)


def build_window_denoiser(denoiser_cfg, latent_dim: int, layout: TokenLayout) -> WindowDenoiser:
    return WindowDenoiser(latent_dim, layout.num_tensors, denoiser_cfg.width, denoiser_cfg.depth, denoiser_cfg.heads,
                          denoiser_cfg.time_dim)


def token_reconstruction_loss(forward, batch: TokenBatch, noise: BatchNoise) -> torch.Tensor:
    """p-diff's autoencoder loss on tokens: MSE between a token and the reconstruction of its noised version."""
    return F.mse_loss(forward(batch.values, batch.tensor_ids, batch.positions, noise), batch.values)


def window_diffusion_loss(diffusion: GaussianDiffusion):
    def loss(forward, batch: WindowBatch, noise: BatchNoise) -> torch.Tensor:
        return diffusion.training_losses(forward, batch.latents, noise,
                                         {"tensor_ids": batch.tensor_ids, "positions": batch.positions})
    return loss


@register
@dataclass
class TokenGenerator(AutoencoderDenoiserGenerator):
    design = "token"
    uses = {"ae": ("token",), "denoiser": ("window",), "sampler": ("ddpm", "ddim")}
    schemas = {"generator": {"generator_schema": GeneratorConfig}, "ae": {"token_schema": TokenAutoencoderConfig},
               "denoiser": {"window_schema": WindowDenoiserConfig}, "sampler": DDPM_SAMPLERS,
               "diffusion": DIFFUSION_SCHEMAS}

    normalizer: ParamNormalizer
    layout: TokenLayout
    autoencoder: TokenAutoencoder
    denoiser: WindowDenoiser  # the EMA weights
    diffusion: GaussianDiffusion
    latent_scale: float
    places: WindowPlaces
    raw_denoiser: WindowDenoiser | None = field(default=None)  # kept after training, to be saved
    recon_mse_normalized: float | None = field(default=None)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    compile_denoiser: bool = False  # sample with torch.compile(denoiser)

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        for key, value, rule in (("ae.token_size", cfg.ae.token_size, "must be >= 1"),
                                 ("denoiser.window", cfg.denoiser.window, "must be >= 1 (tokens per window)")):
            if value < 1:
                raise ConfigError(f"{key}={value!r} is invalid: {rule}")
        if cfg.denoiser.width % cfg.denoiser.heads:
            raise ConfigError(f"denoiser.width={cfg.denoiser.width!r} is invalid: must be a multiple of "
                              f"denoiser.heads={cfg.denoiser.heads}")

    @classmethod
    def train(cls, zoo: ParamZoo, cfg, directory: Path, tracker: Tracker, timer: PhaseTimer,
              device: torch.device) -> TokenGenerator:
        """On `device`; each rank reads only its rows of each batch from the memory-mapped zoo."""
        normalizer, layout, autoencoder = train_token_autoencoder(
            zoo, cfg.ae, cfg.trainer, derive_seed(cfg.seed, Purpose.autoencoder), directory, tracker, device)
        timer("train_autoencoder")
        started = time.perf_counter()
        latents, scale, recon_mse = encode_token_latents(zoo.vectors, normalizer, layout, autoencoder, device)
        tracker.log({"ae/recon_mse_normalized": recon_mse, "ae/encode_s": time.perf_counter() - started})
        places = WindowPlaces(layout, cfg.denoiser.window)
        diffusion = build_diffusion(cfg.diffusion)
        latent_dim = latents.shape[-1]
        raw, ema = fit_denoiser(cfg, lambda: build_window_denoiser(cfg.denoiser, latent_dim, layout),
                                window_diffusion_loss(diffusion), WindowRows(places.split(latents), places),
                                directory, tracker, device)
        timer("train_diffusion")
        return cls(normalizer, layout, autoencoder.cpu(), ema, diffusion, scale, places, raw, recon_mse)

    @classmethod
    def load(cls, directory: Path, spec: ParamSpec, cfg, device: torch.device) -> TokenGenerator:
        layout = TokenLayout(spec, cfg.ae.token_size)
        normalizer, autoencoder = ParamNormalizer(spec.dim), build_token_autoencoder(cfg.ae, layout)
        load_autoencoder_file(directory, normalizer, autoencoder)
        denoiser = build_window_denoiser(cfg.denoiser, cfg.ae.token_latent_dim, layout)
        denoiser.load_state_dict(atomic.read_safetensors(directory / DENOISER_WEIGHTS))
        return cls(normalizer.to(device), layout, autoencoder.to(device).eval(), denoiser.to(device).eval(),
                   build_diffusion(cfg.diffusion), float(read_meta(directory)["latent_scale"]),
                   WindowPlaces(layout, cfg.denoiser.window), device=device, compile_denoiser=cfg.denoiser.compile)

    @torch.no_grad()
    def sample(self, n: int, sampler_cfg, seed: int, conditioning: Conditioning | None = None) -> torch.Tensor:
        """n vectors [n, D]: every window of every model sampled from the EMA denoiser, then decoded."""
        rng = generator_for(seed, Purpose.sampling)
        slots = torch.arange(n * self.places.count) % self.places.count
        chunks = slots.split(SAMPLE_CHUNK)
        label = f"sample {n} models ({len(slots)} windows, {SamplerName(sampler_cfg.name).value})"
        windows, denoiser = [], torch.compile(self.denoiser) if self.compile_denoiser else self.denoiser
        with stage_progress(label, total=self.diffusion.sample_steps(sampler_cfg) * len(chunks)) as bar:
            for chunk in chunks:
                shape = (len(chunk), self.places.window, self.autoencoder.latent_dim)
                windows.append(self.diffusion.sample(denoiser, shape, sampler_cfg, generator=rng,
                                                     device=self.device,
                                                     model_kwargs=self.places.conditioning(chunk, self.device),
                                                     progress=bar.advance))
        latents = torch.cat(windows).view(n, -1, self.autoencoder.latent_dim)[:, :self.layout.count]
        return self.decode(latents).cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled token latents [N, T, C] -> parameter vectors [N, D] (on the generator's device)."""
        out = torch.zeros(len(latents), self.layout.spec.dim, device=self.device)
        for model, model_latents in enumerate(latents):
            for tokens in torch.arange(self.layout.count).split(ENCODE_CHUNK):
                values = self.autoencoder.decode(model_latents[tokens.to(self.device)] * self.latent_scale,
                                                 self.layout.tensor_ids[tokens].to(self.device),
                                                 self.layout.positions[tokens].to(self.device))
                self.layout.scatter(values, tokens, out[model], self.normalizer)
        return out

    @property
    def meta(self) -> dict:
        return {"latent_scale": self.latent_scale, "tokens": self.layout.count, "windows": self.places.count,
                "recon_mse_normalized": self.recon_mse_normalized}


def train_token_autoencoder(zoo: ParamZoo, ae_cfg, trainer_cfg, seed: int, directory: Path, tracker: Tracker,
                            device: torch.device) -> tuple[ParamNormalizer, TokenLayout, TokenAutoencoder]:
    """Normaliser from the zoo (one tensor at a time), then the shared token autoencoder on random tokens."""
    normalizer = ParamNormalizer.fit(zoo.spec, zoo.vectors, Normalization(ae_cfg.normalization))
    layout = TokenLayout(zoo.spec, ae_cfg.token_size)
    torch.manual_seed(seed)
    fitted = fit(build_token_autoencoder(ae_cfg, layout), token_reconstruction_loss,
                 ZooTokens(zoo.vectors, layout, normalizer), ae_cfg.optim, ae_cfg.cadence, trainer_cfg, name="ae",
                 seed=seed, checkpoint_dir=directory / "ae_checkpoint", tracker=tracker, device=device)
    autoencoder = build_token_autoencoder(ae_cfg, layout)
    autoencoder.load_state_dict(fitted.weights)
    return normalizer, layout, autoencoder.eval()


@torch.no_grad()
def encode_token_latents(vectors: torch.Tensor, normalizer: ParamNormalizer, layout: TokenLayout,
                         autoencoder: TokenAutoencoder, device: torch.device) -> tuple[torch.Tensor, float, float]:
    """Latents [K, T, C] (CPU) of every zoo token scaled to unit std, the scale, and the normalised reconstruction
    MSE; the tokens are read from the CPU zoo and encoded on `device`."""
    autoencoder.to(device)
    latents = torch.empty(len(vectors), layout.count, autoencoder.latent_dim)
    squared_error, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for model in range(len(vectors)):
        for tokens in torch.arange(layout.count).split(ENCODE_CHUNK):
            batch = layout.gather(vectors, torch.full_like(tokens, model), tokens, normalizer)
            values, ids, positions = batch.values.to(device), batch.tensor_ids.to(device), batch.positions.to(device)
            encoded = autoencoder.encode(values, ids, positions)
            latents[model, tokens] = encoded.cpu()
            recon = autoencoder.decode(encoded, ids, positions)
            _, valid = layout.columns(tokens)
            squared_error += ((recon - values)[valid.to(device)] ** 2).sum().double()
            count += int(valid.sum())
    squared_error = float(squared_error)
    scale = float(latents.std().clamp_min(1e-8))
    return latents / scale, scale, squared_error / max(count, 1)
