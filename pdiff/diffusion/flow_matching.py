"""Flow matching (rectified flow; Liu et al. 2023, Lipman et al. 2023): the one place its maths
lives.

    x_t = (1 - t) x_0 + t x_1,  x_0 ~ N(0, I) (noise at t = 0),  x_1 = data (t = 1),  target v = x_1
    - x_0.

A velocity model is called as `model(x_t, t, **model_kwargs)` with a per-sample time t in [0, 1]
[B]. Sampling integrates dx/dt = v from noise to data with Euler or Heun steps on a uniform grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pdiff.diffusion.noise import BatchNoise, sampler_name

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _broadcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.ndim - 1)))


def flow_matching_loss(
    model: Callable[..., torch.Tensor],
    x1: torch.Tensor,
    noise: BatchNoise,
    model_kwargs: dict | None = None,
) -> torch.Tensor:
    """MSE between the predicted and the straight-line velocity at a uniform random time per sample."""
    x0 = noise.randn(*x1.shape[1:]).to(x1.dtype)
    t = noise.rand().to(x1.dtype)
    xt = (1 - _broadcast(t, x1)) * x0 + _broadcast(t, x1) * x1
    return F.mse_loss(model(xt, t, **(model_kwargs or {})), x1 - x0)


@torch.no_grad()
def sample_flow(
    velocity: Velocity,
    shape: tuple[int, ...],
    sampler_cfg,
    generator: torch.Generator,
    device: torch.device,
    progress: Callable[[], None] | None = None,
) -> torch.Tensor:
    """x_1 of `shape` on `device`: x_0 drawn on the CPU by `generator` (the same on every device;
    standard deviation sampler_cfg.temperature), then sampler_cfg.steps Euler (sampler=euler) or
    Heun (sampler=heun: 2 velocity calls a step) steps."""
    x = (torch.randn(shape, generator=generator) * sampler_cfg.temperature).to(device)
    grid = torch.linspace(0.0, 1.0, sampler_cfg.steps + 1)
    heun = sampler_name(sampler_cfg) == "heun"
    for t0, t1 in zip(grid[:-1].tolist(), grid[1:].tolist()):
        h = t1 - t0
        v0 = velocity(x, torch.full((shape[0],), t0, device=device))
        if heun:
            v1 = velocity(x + h * v0, torch.full((shape[0],), t1, device=device))
            x = x + 0.5 * h * (v0 + v1)
        else:
            x = x + h * v0
        if progress is not None:
            progress()
    return x
