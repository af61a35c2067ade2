"""TokenGenerator, the Generator of generator=token: it trains the model code, the token
autoencoder and both DDPMs, saves and loads them, samples and decodes (the design:
pdiff/generators/token/__init__.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pdiff import atomic
from pdiff.config import GeneratorConfig, Normalization
from pdiff.diffusion.gaussian import GaussianDiffusion, build_diffusion
from pdiff.errors import ConfigError
from pdiff.generators.autoencoder_ddpm import (
    DDPM_SAMPLERS,
    DENOISER_WEIGHTS,
    DIFFUSION_SCHEMAS,
    AutoencoderDenoiserGenerator,
    fit_denoiser,
    load_autoencoder_file,
)
from pdiff.generators.flow import conditioned_loss, normalised_accuracy, normalised_target
from pdiff.generators.interface import Conditioning, PhaseTimer, check_training, read_meta
from pdiff.generators.nets.token_networks import CodeDenoiser, TokenAutoencoder, WindowDenoiser
from pdiff.generators.nets.velocity import VelocityMLP
from pdiff.generators.pca import PCABasis
from pdiff.generators.registry import register
from pdiff.generators.token.layout import TokenLayout, ZooCodes
from pdiff.generators.token.sampling import sample_code_flow, sample_codes, sample_windows
from pdiff.generators.token.schemas import CodeModel, TokenAutoencoderConfig, WindowDenoiserConfig
from pdiff.generators.token.training import (
    ENCODE_CHUNK,
    build_code_denoiser,
    build_token_autoencoder,
    build_window_denoiser,
    code_diffusion_loss,
    encode_token_latents,
    train_token_autoencoder,
    window_diffusion_loss,
)
from pdiff.generators.token.windows import WindowPlaces, WindowRows
from pdiff.seeds import Purpose, derive_seed, generator_for
from pdiff.tracking import Tracker
from pdiff.zoo.params import ParamNormalizer, ParamSpec
from pdiff.zoo.store import ParamZoo

CODE_FILE = "code.safetensors"
CODE_WEIGHTS = "code_denoiser_ema.safetensors"
CODE_RAW_WEIGHTS = "code_denoiser.safetensors"


@register
@dataclass
class TokenGenerator(AutoencoderDenoiserGenerator):
    design = "token"
    uses = {"ae": ("token",), "denoiser": ("window",), "sampler": ("ddpm", "ddim")}
    phases = {
        "ae": "Token autoencoder (reconstruction)",
        "code": "Model-code DDPM (noise prediction) or flow (velocity)",
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
    code_denoiser: CodeDenoiser | VelocityMLP | None  # the EMA weights (a velocity: model=flow)
    denoiser: WindowDenoiser  # the EMA weights
    diffusion: GaussianDiffusion
    latent_scale: float
    bounds: dict[
        str, float
    ]  # the largest |value| of the training codes and of the scaled token latents
    places: WindowPlaces
    raw_denoiser: WindowDenoiser | None = field(default=None)  # kept after training, to be saved
    raw_code_denoiser: CodeDenoiser | VelocityMLP | None = field(default=None)
    recon_mse_normalized: float | None = field(default=None)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    compile_denoiser: bool = False  # sample with torch.compile(denoiser)
    # denoiser.code.model=flow: the (mean, std) of the accuracies it is conditioned on
    accuracy_stats: tuple[float, float] | None = field(default=None)
    code_sampling: object | None = field(default=None)  # denoiser.code (model=flow's sampler)

    condition_setting = "denoiser.code.model=flow"

    @classmethod
    def conditioned(cls, cfg) -> bool:
        return cfg.ae.code_components > 0 and CodeModel(cfg.denoiser.code.model) is CodeModel.flow

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
        code = cfg.denoiser.code
        for key, valid, rule in (
            ("condition_dropout", 0.0 <= code.condition_dropout < 1.0, "must be in [0, 1)"),
            ("temperature", code.temperature > 0, "must be > 0"),
            ("steps", code.steps >= 1, "must be >= 1"),
        ):
            if not valid:
                raise ConfigError(f"denoiser.code.{key}={code[key]!r} is invalid: {rule}")
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
        raw_code, code_ema, stats = None, None, None
        if codes is not None:
            loss, rows = code_diffusion_loss(diffusion), codes.codes
            if cls.conditioned(cfg):  # a flow on [code | normalised accuracy]
                accuracy, stats = normalised_accuracy(zoo.val_accuracy)
                loss = conditioned_loss(cfg.denoiser.code.condition_dropout)
                rows = torch.cat([codes.codes, accuracy[:, None]], 1)
            raw_code, code_ema = fit_denoiser(
                cfg,
                lambda: build_code_denoiser(cfg.denoiser, code.k),
                loss,
                rows,
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
            accuracy_stats=stats,
            code_sampling=cfg.denoiser.code,
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
            accuracy_stats=tuple(meta["accuracy_stats"]) if meta.get("accuracy_stats") else None,
            code_sampling=cfg.denoiser.code,
        )

    @torch.no_grad()
    def sample(
        self, n: int, sampler_cfg, seed: int, conditioning: Conditioning | None = None
    ) -> torch.Tensor:
        """n vectors [n, D]: n model codes first, then every window of every model given its model's
        code (in chunks of SAMPLE_CHUNK windows), decoded."""
        rng = generator_for(seed, Purpose.sampling)
        codes = None
        if self.accuracy_stats is not None:
            codes = sample_code_flow(
                self.code_denoiser,
                (n, self.code.k),
                normalised_target(conditioning, self.accuracy_stats),
                conditioning.guidance if conditioning is not None else 1.0,
                self.code_sampling,
                rng,
                self.device,
            )
        elif self.code_denoiser is not None:
            codes = sample_codes(
                self.diffusion,
                self.code_denoiser,
                (n, self.code.k),
                rng,
                self.device,
                self.bounds["codes"],
            )
        windows = sample_windows(
            self.diffusion,
            torch.compile(self.denoiser) if self.compile_denoiser else self.denoiser,
            self.places,
            self.autoencoder.latent_dim,
            n,
            codes,
            sampler_cfg,
            rng,
            self.device,
            self.bounds["latents"],
        )
        latents = windows.view(n, -1, self.autoencoder.latent_dim)[:, : self.layout.count]
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
            "accuracy_stats": list(self.accuracy_stats) if self.accuracy_stats else None,
        }
