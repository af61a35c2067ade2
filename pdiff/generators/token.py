"""pdiff's large-D design (generator=token): a model code, a token autoencoder, and DDPMs on both
latents.

    zoo [K, D] (memory map) --normalised--> z --top-m PCA, whitened--> model codes c [K, m]
    z - decode(c) --tokens of S values--> [K, T, S] --shared token encoder--> latents [K, T, C]
        --cut into windows of W tokens--> [K * T/W, W, C]
    generation: c ~ code DDPM; every window of the model ~ window DDPM told c and its tokens' places
        --token decoder--> residual [D]; decode(c) + residual --denormalised--> [N, D]

The code ties the windows of one network together: they are sampled given the same c, which also
carries the network's global shape (the zoo's principal directions), while the tokens carry what it
leaves out. Training reads random (model, token) rows from the memory-mapped zoo and the basis is
fitted column block by column block, so no step loads the zoo; the window denoiser sees one window
at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pdiff import atomic
from pdiff.config import CadenceConfig, GeneratorConfig, Normalization, OptimConfig, SamplerName
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
    DDPMSamplerConfig,
    PhaseTimer,
    check_training,
    fit_denoiser,
    load_autoencoder_file,
    read_meta,
)
from pdiff.generators.nets.token_nets import CodeDenoiser, TokenAutoencoder, WindowDenoiser
from pdiff.generators.pca import PCABasis
from pdiff.generators.registry import register
from pdiff.generators.tokens import TokenBatch, TokenLayout, ZooCodes, ZooTokens
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
    code_components: int = (
        32  # m: the model code, top-m whitened PCA coefficients (0: windows independent)
    )
    embed_dim: int = 64
    hidden: list[int] = field(default_factory=lambda: [256, 256])


@dataclass
class CodeDenoiserConfig:
    """The model codes' denoiser: a residual MLP, with its own budget (one step is one small MLP
    call on codes)."""

    width: int = 256
    depth: int = 3
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=5000, batch_size=256))
    cadence: CadenceConfig = field(default_factory=CadenceConfig)


@dataclass
class WindowDenoiserConfig:
    """The token design's denoiser: a pre-norm transformer over windows of token latents."""

    name: str = "window"
    window: int = 64  # token latents per window
    width: int = 128
    depth: int = 2
    heads: int = 4
    time_dim: int = 128
    code: CodeDenoiserConfig = field(default_factory=CodeDenoiserConfig)
    compile: bool = False  # torch.compile the denoiser for training (trainer=plain) and sampling


# Model codes are sampled with DDPM's ancestral chain whatever `sampler` says: it costs one small
# MLP call per step, and DDIM's deterministic jumps overshoot on the codes (sampled code norms 37
# against the zoo's 3.8 at 10^5).
CODE_SAMPLER = DDPMSamplerConfig()
CODE_FILE = "code.safetensors"
CODE_WEIGHTS = "code_denoiser_ema.safetensors"
CODE_RAW_WEIGHTS = "code_denoiser.safetensors"
ENCODE_CHUNK = 8192  # tokens per encoder/decoder call
SAMPLE_CHUNK = 512  # windows sampled together


@dataclass
class WindowBatch:
    latents: torch.Tensor  # [B, W, C]
    tensor_ids: torch.Tensor  # [B, W]
    positions: torch.Tensor  # [B, W]
    codes: torch.Tensor | None  # [B, m]: the code of each window's model

    def __len__(self) -> int:
        return len(self.latents)

    def conditioning(self) -> dict[str, torch.Tensor]:
        kwargs = {"tensor_ids": self.tensor_ids, "positions": self.positions}
        return kwargs if self.codes is None else {**kwargs, "code": self.codes}


class WindowPlaces:
    """Tokens grouped in windows of W: tensor index and position per slot, padding marked as tensor
    `num_tensors`."""

    def __init__(self, layout: TokenLayout, window: int):
        self.window = window
        self.count = -(-layout.count // window)
        pad = self.count * window - layout.count
        self.tensor_ids = F.pad(layout.tensor_ids, (0, pad), value=layout.num_tensors).view(
            self.count, window
        )
        self.positions = F.pad(layout.positions, (0, pad)).view(self.count, window)

    def split(self, latents: torch.Tensor) -> torch.Tensor:
        """Token latents [K, T, C] -> windows [K * count, W, C] (zero padding at the end)."""
        pad = self.count * self.window - latents.shape[1]
        return F.pad(latents, (0, 0, 0, pad)).reshape(-1, self.window, latents.shape[-1])

    def conditioning(
        self, slots: torch.Tensor, codes: torch.Tensor | None, device: torch.device
    ) -> dict:
        """The window denoiser's model_kwargs for windows at `slots` [B]: each token's tensor and
        position [B, W], and (with codes [B, m]) the code of each window's model."""
        kwargs = {
            "tensor_ids": self.tensor_ids[slots].to(device),
            "positions": self.positions[slots].to(device),
        }
        return kwargs if codes is None else {**kwargs, "code": codes.to(device)}


class WindowRows:
    """Windows of every zoo model as training rows (row r = model r // count, window r % count)."""

    def __init__(self, windows: torch.Tensor, places: WindowPlaces, codes: torch.Tensor | None):
        self.windows, self.places, self.codes = windows, places, codes

    def __len__(self) -> int:
        return len(self.windows)

    def take(self, rows: torch.Tensor, dtype: torch.dtype, device: torch.device) -> WindowBatch:
        codes = None if self.codes is None else self.codes[rows // self.places.count].to(dtype)
        kwargs = self.places.conditioning(rows % self.places.count, codes, device)
        return WindowBatch(
            self.windows[rows].to(device=device, dtype=dtype),
            kwargs["tensor_ids"],
            kwargs["positions"],
            kwargs.get("code"),
        )


def build_token_autoencoder(ae_cfg, layout: TokenLayout) -> TokenAutoencoder:
    return TokenAutoencoder(
        ae_cfg.token_size,
        layout.num_tensors,
        ae_cfg.token_latent_dim,
        list(ae_cfg.hidden),
        ae_cfg.embed_dim,
        ae_cfg.input_noise,
        ae_cfg.latent_noise,
    )


def build_window_denoiser(
    denoiser_cfg, latent_dim: int, layout: TokenLayout, code_dim: int
) -> WindowDenoiser:
    return WindowDenoiser(
        latent_dim,
        layout.num_tensors,
        denoiser_cfg.width,
        denoiser_cfg.depth,
        denoiser_cfg.heads,
        denoiser_cfg.time_dim,
        code_dim,
    )


def build_code_denoiser(denoiser_cfg, code_dim: int) -> CodeDenoiser:
    return CodeDenoiser(
        code_dim, denoiser_cfg.code.width, denoiser_cfg.code.depth, denoiser_cfg.time_dim
    )


def token_reconstruction_loss(forward, batch: TokenBatch, noise: BatchNoise) -> torch.Tensor:
    """p-diff's autoencoder loss on tokens: MSE between a token and the reconstruction of its noised
    version."""
    return F.mse_loss(forward(batch.values, batch.tensor_ids, batch.positions, noise), batch.values)


def window_diffusion_loss(diffusion: GaussianDiffusion):
    def loss(forward, batch: WindowBatch, noise: BatchNoise) -> torch.Tensor:
        return diffusion.training_losses(forward, batch.latents, noise, batch.conditioning())

    return loss


def code_diffusion_loss(diffusion: GaussianDiffusion):
    def loss(forward, codes: torch.Tensor, noise: BatchNoise) -> torch.Tensor:
        return diffusion.training_losses(forward, codes, noise)

    return loss


@register
@dataclass
class TokenGenerator(AutoencoderDenoiserGenerator):
    design = "token"
    uses = {"ae": ("token",), "denoiser": ("window",), "sampler": ("ddpm", "ddim")}
    phases = {
        "ae": "Token autoencoder (reconstruction)",
        "code": "Model-code DDPM (noise prediction)",
        "diffusion": "Window DDPM (noise prediction)",
    }
    schemas = {
        "generator": {"generator_schema": GeneratorConfig},
        "ae": {"token_schema": TokenAutoencoderConfig},
        "denoiser": {"window_schema": WindowDenoiserConfig},
        "sampler": DDPM_SAMPLERS,
        "diffusion": DIFFUSION_SCHEMAS,
    }

    normalizer: ParamNormalizer
    layout: TokenLayout
    code: PCABasis  # k = 0: no model code, windows independent
    autoencoder: TokenAutoencoder
    code_denoiser: CodeDenoiser | None  # the EMA weights
    denoiser: WindowDenoiser  # the EMA weights
    diffusion: GaussianDiffusion
    latent_scale: float
    bounds: dict[
        str, float
    ]  # the largest |value| of the training codes and of the scaled token latents
    places: WindowPlaces
    raw_denoiser: WindowDenoiser | None = field(default=None)  # kept after training, to be saved
    raw_code_denoiser: CodeDenoiser | None = field(default=None)
    recon_mse_normalized: float | None = field(default=None)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    compile_denoiser: bool = False  # sample with torch.compile(denoiser)

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        for key, value, least, rule in (
            ("ae.token_size", cfg.ae.token_size, 1, "must be >= 1"),
            ("ae.code_components", cfg.ae.code_components, 0, "must be >= 0 (0: no model code)"),
            ("denoiser.window", cfg.denoiser.window, 1, "must be >= 1 (tokens per window)"),
        ):
            if value < least:
                raise ConfigError(f"{key}={value!r} is invalid: {rule}")
        check_training(cfg.denoiser.code, "denoiser.code")
        if cfg.denoiser.width % cfg.denoiser.heads:
            raise ConfigError(
                f"denoiser.width={cfg.denoiser.width!r} is invalid: must be a multiple of "
                f"denoiser.heads={cfg.denoiser.heads}"
            )

    @classmethod
    def train(
        cls,
        zoo: ParamZoo,
        cfg,
        directory: Path,
        tracker: Tracker,
        timer: PhaseTimer,
        device: torch.device,
    ) -> TokenGenerator:
        """On `device`; each rank reads only its rows of each batch from the memory-mapped zoo."""
        normalizer = ParamNormalizer.fit(zoo.spec, zoo.vectors, Normalization(cfg.ae.normalization))
        code = PCABasis.fit(zoo.vectors, cfg.ae.code_components, normalizer)
        codes = ZooCodes(code, code.encode_rows(zoo.vectors, normalizer)) if code.k else None
        tracker.log({"code/components": code.k})
        timer("fit_code")
        layout, autoencoder = train_token_autoencoder(
            zoo,
            normalizer,
            codes,
            cfg.ae,
            cfg.trainer,
            derive_seed(cfg.seed, Purpose.autoencoder),
            directory,
            tracker,
            device,
        )
        timer("train_autoencoder")
        started = time.perf_counter()
        latents, scale, recon_mse = encode_token_latents(
            zoo.vectors, normalizer, layout, autoencoder, device, codes
        )
        tracker.log(
            {"ae/recon_mse_normalized": recon_mse, "ae/encode_s": time.perf_counter() - started}
        )
        diffusion = build_diffusion(cfg.diffusion)
        raw_code, code_ema = None, None
        if codes is not None:
            raw_code, code_ema = fit_denoiser(
                cfg,
                lambda: build_code_denoiser(cfg.denoiser, code.k),
                code_diffusion_loss(diffusion),
                codes.codes,
                directory,
                tracker,
                device,
                name="code",
                budget=cfg.denoiser.code,
            )
            timer("train_code")
        places = WindowPlaces(layout, cfg.denoiser.window)
        latent_dim = latents.shape[-1]
        raw, ema = fit_denoiser(
            cfg,
            lambda: build_window_denoiser(cfg.denoiser, latent_dim, layout, code.k),
            window_diffusion_loss(diffusion),
            WindowRows(places.split(latents), places, None if codes is None else codes.codes),
            directory,
            tracker,
            device,
        )
        timer("train_diffusion")
        bounds = {"latents": float(latents.abs().max())}
        if codes is not None:
            bounds["codes"] = float(codes.codes.abs().max())
        return cls(
            normalizer,
            layout,
            code,
            autoencoder.cpu(),
            code_ema,
            ema,
            diffusion,
            scale,
            bounds,
            places,
            raw,
            raw_code,
            recon_mse,
        )

    @classmethod
    def load(cls, directory: Path, spec: ParamSpec, cfg, device: torch.device) -> TokenGenerator:
        meta = read_meta(directory)
        layout = TokenLayout(spec, cfg.ae.token_size)
        normalizer, autoencoder = ParamNormalizer(spec.dim), build_token_autoencoder(cfg.ae, layout)
        load_autoencoder_file(directory, normalizer, autoencoder)
        code = PCABasis(spec.dim, int(meta["code_components"]))
        code_denoiser = None
        if code.k:
            code.load_state_dict(atomic.read_safetensors(directory / CODE_FILE))
            code_denoiser = build_code_denoiser(cfg.denoiser, code.k)
            code_denoiser.load_state_dict(atomic.read_safetensors(directory / CODE_WEIGHTS))
            code_denoiser = code_denoiser.to(device).eval()
        denoiser = build_window_denoiser(cfg.denoiser, cfg.ae.token_latent_dim, layout, code.k)
        denoiser.load_state_dict(atomic.read_safetensors(directory / DENOISER_WEIGHTS))
        return cls(
            normalizer.to(device),
            layout,
            code.to(device),
            autoencoder.to(device).eval(),
            code_denoiser,
            denoiser.to(device).eval(),
            build_diffusion(cfg.diffusion),
            float(meta["latent_scale"]),
            meta["sampling_bounds"],
            WindowPlaces(layout, cfg.denoiser.window),
            device=device,
            compile_denoiser=cfg.denoiser.compile,
        )

    @torch.no_grad()
    def sample(
        self, n: int, sampler_cfg, seed: int, conditioning: Conditioning | None = None
    ) -> torch.Tensor:
        """n vectors [n, D]: n model codes first, then every window of every model given its model's
        code (in chunks of SAMPLE_CHUNK windows), decoded."""
        rng = generator_for(seed, Purpose.sampling)
        name = SamplerName(sampler_cfg.name).value
        steps = self.diffusion.sample_steps(sampler_cfg)
        codes = None
        if (
            self.code_denoiser is not None
        ):  # always the full ancestral chain: one MLP call on [n, m] a step
            with stage_progress(
                f"sample {n} model codes (ddpm)", total=self.diffusion.timesteps
            ) as bar:
                codes = self.diffusion.sample(
                    self.code_denoiser,
                    (n, self.code.k),
                    CODE_SAMPLER,
                    generator=rng,
                    device=self.device,
                    progress=bar.advance,
                    clip_start=self.bounds["codes"],
                )
        rows = torch.arange(n * self.places.count)
        chunks = rows.split(SAMPLE_CHUNK)
        windows, denoiser = (
            [],
            torch.compile(self.denoiser) if self.compile_denoiser else self.denoiser,
        )
        with stage_progress(
            f"sample {n} models ({len(rows)} windows, {name})", total=steps * len(chunks)
        ) as bar:
            for chunk in chunks:
                shape = (len(chunk), self.places.window, self.autoencoder.latent_dim)
                slots = chunk % self.places.count
                chunk_codes = None if codes is None else codes[chunk // self.places.count]
                kwargs = self.places.conditioning(slots, chunk_codes, self.device)
                windows.append(
                    self.diffusion.sample(
                        denoiser,
                        shape,
                        sampler_cfg,
                        generator=rng,
                        device=self.device,
                        model_kwargs=kwargs,
                        progress=bar.advance,
                        clip_start=self.bounds["latents"],
                    )
                )
        latents = torch.cat(windows).view(n, -1, self.autoencoder.latent_dim)[
            :, : self.layout.count
        ]
        return self.decode(latents, codes).cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled token latents [N, T, C] (+ model codes [N, m]) -> parameter vectors [N, D] (on the
        generator's device)."""
        out = torch.zeros(len(latents), self.layout.spec.dim, device=self.device)
        for model, model_latents in enumerate(latents):
            for tokens in torch.arange(self.layout.count).split(ENCODE_CHUNK):
                values = self.autoencoder.decode(
                    model_latents[tokens.to(self.device)] * self.latent_scale,
                    self.layout.tensor_ids[tokens].to(self.device),
                    self.layout.positions[tokens].to(self.device),
                )
                self.layout.scatter(values, tokens, out[model])
        return self.normalizer.denormalize(out if codes is None else out + self.code.decode(codes))

    def networks(self) -> dict[str, nn.Module]:
        networks = super().networks()
        return (
            networks
            if self.code_denoiser is None
            else {**networks, "code_denoiser": self.code_denoiser}
        )

    def files(self) -> dict[str, dict[str, torch.Tensor]]:
        files = super().files()
        if self.code_denoiser is not None:
            files[CODE_FILE] = self.code.state_dict()
            files[CODE_WEIGHTS] = self.code_denoiser.state_dict()
            if self.raw_code_denoiser is not None:
                files[CODE_RAW_WEIGHTS] = self.raw_code_denoiser.state_dict()
        return files

    @property
    def meta(self) -> dict:
        return {
            "latent_scale": self.latent_scale,
            "sampling_bounds": self.bounds,
            "tokens": self.layout.count,
            "windows": self.places.count,
            "code_components": self.code.k,
            "recon_mse_normalized": self.recon_mse_normalized,
        }


def train_token_autoencoder(
    zoo: ParamZoo,
    normalizer: ParamNormalizer,
    codes: ZooCodes | None,
    ae_cfg,
    trainer_cfg,
    seed: int,
    directory: Path,
    tracker: Tracker,
    device: torch.device,
) -> tuple[TokenLayout, TokenAutoencoder]:
    """The shared token autoencoder on random tokens of the normalised zoo (less what the codes
    decode to)."""
    layout = TokenLayout(zoo.spec, ae_cfg.token_size)
    torch.manual_seed(seed)
    fitted = fit(
        build_token_autoencoder(ae_cfg, layout),
        token_reconstruction_loss,
        ZooTokens(zoo.vectors, layout, normalizer, codes),
        ae_cfg.optim,
        ae_cfg.cadence,
        trainer_cfg,
        name="ae",
        seed=seed,
        checkpoint_dir=directory / "ae_checkpoint",
        tracker=tracker,
        device=device,
    )
    autoencoder = build_token_autoencoder(ae_cfg, layout)
    autoencoder.load_state_dict(fitted.weights)
    return layout, autoencoder.eval()


@torch.no_grad()
def encode_token_latents(
    vectors: torch.Tensor,
    normalizer: ParamNormalizer,
    layout: TokenLayout,
    autoencoder: TokenAutoencoder,
    device: torch.device,
    codes: ZooCodes | None = None,
) -> tuple[torch.Tensor, float, float]:
    """Latents [K, T, C] (CPU) of every zoo token (less what its model's code decodes to) scaled to
    unit std, the scale, and the normalised reconstruction MSE; the tokens are read from the CPU zoo
    and encoded on `device`."""
    autoencoder.to(device)
    latents = torch.empty(len(vectors), layout.count, autoencoder.latent_dim)
    squared_error, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for model in range(len(vectors)):
        for tokens in torch.arange(layout.count).split(ENCODE_CHUNK):
            batch = layout.gather(
                vectors, torch.full_like(tokens, model), tokens, normalizer, codes
            )
            values, ids, positions = (
                batch.values.to(device),
                batch.tensor_ids.to(device),
                batch.positions.to(device),
            )
            encoded = autoencoder.encode(values, ids, positions)
            latents[model, tokens] = encoded.cpu()
            recon = autoencoder.decode(encoded, ids, positions)
            _, valid = layout.columns(tokens)
            squared_error += ((recon - values)[valid.to(device)] ** 2).sum().double()
            count += int(valid.sum())
    squared_error = float(squared_error)
    scale = float(latents.std().clamp_min(1e-8))
    return latents / scale, scale, squared_error / max(count, 1)
