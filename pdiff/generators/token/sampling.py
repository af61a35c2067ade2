"""Sampling the token design: n model codes first (by the code DDPM's ancestral chain, or by the
accuracy-conditioned code flow), then every window of every model given its model's code, a chunk of
windows at a time."""

from __future__ import annotations

import torch
from torch import nn

from pdiff.config import SamplerName
from pdiff.diffusion.flow_matching import sample_flow
from pdiff.diffusion.gaussian import GaussianDiffusion
from pdiff.generators.autoencoder_ddpm import DDPMSamplerConfig
from pdiff.generators.flow import guided_velocity
from pdiff.generators.flow_schemas import FlowSamplerConfig
from pdiff.generators.nets.velocity import VelocityMLP
from pdiff.generators.token.windows import WindowPlaces
from pdiff.tracking import stage_progress

# Model codes are sampled with DDPM's ancestral chain whatever `sampler` says: it costs one small
# MLP call per step, and DDIM's deterministic jumps overshoot on the codes (sampled code norms 37
# against the zoo's 3.8 at 10^5).
CODE_SAMPLER = DDPMSamplerConfig()
SAMPLE_CHUNK = 512  # windows sampled together


@torch.no_grad()
def sample_codes(
    diffusion: GaussianDiffusion,
    code_denoiser: nn.Module,
    shape: tuple[int, int],
    rng: torch.Generator,
    device: torch.device,
    bound: float,
) -> torch.Tensor:
    """Model codes of `shape` [n, m] from the full ancestral chain (one MLP call on [n, m] a step),
    each step's start clipped to +-`bound`."""
    n = shape[0]
    with stage_progress(f"sample {n} model codes (ddpm)", total=diffusion.timesteps) as bar:
        return diffusion.sample(
            code_denoiser,
            shape,
            CODE_SAMPLER,
            generator=rng,
            device=device,
            progress=bar.advance,
            clip_start=bound,
        )


@torch.no_grad()
def sample_code_flow(
    velocity: VelocityMLP,
    shape: tuple[int, int],
    condition: float | None,
    guidance: float,
    code_cfg,
    rng: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Model codes of `shape` [n, m] by code_cfg.steps Euler steps of the code flow from
    N(0, code_cfg.temperature^2 I), toward the normalised accuracy `condition` with classifier-free
    `guidance` (None: the null condition)."""
    n = shape[0]
    field = (
        (lambda x, t: velocity(x, t))
        if condition is None
        else guided_velocity(velocity, torch.full((n,), condition, device=device), guidance)
    )
    sampler = FlowSamplerConfig(steps=code_cfg.steps, temperature=code_cfg.temperature)
    with stage_progress(f"sample {n} model codes (flow)", total=sampler.steps) as bar:
        return sample_flow(field, shape, sampler, rng, device, progress=bar.advance)


@torch.no_grad()
def sample_windows(
    diffusion: GaussianDiffusion,
    denoiser: nn.Module,
    places: WindowPlaces,
    latent_dim: int,
    n: int,
    codes: torch.Tensor | None,
    sampler_cfg,
    rng: torch.Generator,
    device: torch.device,
    bound: float,
) -> torch.Tensor:
    """Every window of n models [n * places.count, W, latent_dim] with `sampler_cfg`, SAMPLE_CHUNK
    windows at a time, each told its model's code (codes [n, m], or None); starts clipped to
    +-`bound`."""
    name = SamplerName(sampler_cfg.name).value
    steps = diffusion.sample_steps(sampler_cfg)
    rows = torch.arange(n * places.count)
    chunks = rows.split(SAMPLE_CHUNK)
    windows = []
    with stage_progress(
        f"sample {n} models ({len(rows)} windows, {name})", total=steps * len(chunks)
    ) as bar:
        for chunk in chunks:
            shape = (len(chunk), places.window, latent_dim)
            slots = chunk % places.count
            chunk_codes = None if codes is None else codes[chunk // places.count]
            kwargs = places.conditioning(slots, chunk_codes, device)
            windows.append(
                diffusion.sample(
                    denoiser,
                    shape,
                    sampler_cfg,
                    generator=rng,
                    device=device,
                    model_kwargs=kwargs,
                    progress=bar.advance,
                    clip_start=bound,
                )
            )
    return torch.cat(windows)
