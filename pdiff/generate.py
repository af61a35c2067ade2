"""Sample new parameter vectors: latent diffusion (DDPM or DDIM) in one batch, then decode."""

from __future__ import annotations

import torch

from pdiff.config import Sampler
from pdiff.generator import ParamGenerator
from pdiff.progress import stage_progress


def generate_parameters(generator: ParamGenerator, n: int, diffusion_cfg, seed: int) -> torch.Tensor:
    """n parameter vectors [n, D], sampled as one batch from the EMA denoiser."""
    shape = (n, *generator.autoencoder.latent_shape)
    rng = torch.Generator().manual_seed(seed)
    sampler = Sampler(diffusion_cfg.sampler)
    steps = generator.diffusion.timesteps if sampler is Sampler.ddpm else len(
        generator.diffusion.ddim_timesteps(diffusion_cfg.ddim_steps))
    with stage_progress(f"sample {n} models ({sampler.value})", total=steps) as bar:
        if sampler is Sampler.ddpm:
            latents = generator.diffusion.p_sample_loop(generator.denoiser, shape, generator=rng,
                                                        progress=bar.advance)
        else:
            latents = generator.diffusion.ddim_sample_loop(generator.denoiser, shape, diffusion_cfg.ddim_steps,
                                                           eta=diffusion_cfg.ddim_eta, generator=rng,
                                                           progress=bar.advance)
    return generator.decode(latents)
