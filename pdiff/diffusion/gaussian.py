"""Gaussian diffusion (DDPM, Ho et al. 2020): schedule, q_sample, training loss, DDPM and DDIM
sampling.

The schedule is computed once in float64 and cast at the point of use. The denoiser is passed in,
called as `model(x_t, t, **model_kwargs)` with a per-sample timestep `t` [B], and predicts the noise
`eps`; `model_kwargs` carry whatever else a design conditions on (token places, a target accuracy),
untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pdiff.diffusion.noise import BatchNoise, sampler_name

Denoiser = Callable[..., torch.Tensor]


def build_diffusion(diffusion_cfg) -> GaussianDiffusion:
    """The diffusion that `diffusion.*` describes (linear betas)."""
    return GaussianDiffusion(
        linear_betas(diffusion_cfg.timesteps, diffusion_cfg.beta_start, diffusion_cfg.beta_end)
    )


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def _randn(
    shape: tuple[int, ...], generator: torch.Generator | None, device: str | torch.device
) -> torch.Tensor:
    """Standard normal noise drawn on the CPU and moved: the same numbers on every device."""
    return torch.randn(shape, generator=generator).to(device)


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] reshaped to broadcast over `like` ([B] -> [B, 1, ...]) in like's dtype."""
    out = values.to(like.device)[t].to(like.dtype)
    return out.view(-1, *([1] * (like.ndim - 1)))


class GaussianDiffusion:
    """Epsilon-prediction diffusion over tensors [B, ...] with T steps."""

    def __init__(self, betas: torch.Tensor):
        self.betas = betas.double()
        self.timesteps = len(betas)
        alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(alphas, 0)
        self.alphas_cumprod_prev = torch.cat(
            [torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]]
        )
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        self.posterior_variance = (
            self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = (
            self.betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / (1.0 - self.alphas_cumprod)
        )

    def q_sample(
        self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
        noise = torch.randn_like(x_start) if noise is None else noise
        return (
            _gather(self.sqrt_alphas_cumprod, t, x_start) * x_start
            + _gather(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise
        )

    def training_losses(
        self,
        model: Denoiser,
        x_start: torch.Tensor,
        noise: BatchNoise,
        model_kwargs: dict | None = None,
    ) -> torch.Tensor:
        """MSE between the true and predicted noise, one uniform timestep per sample; returns a
        scalar."""
        t = noise.randint(self.timesteps).to(x_start.device)
        eps = noise.randn(*x_start.shape[1:]).to(x_start)
        return F.mse_loss(model(self.q_sample(x_start, t, eps), t, **(model_kwargs or {})), eps)

    def predict_start_from_eps(
        self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        return (
            _gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def q_posterior_mean(
        self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        return (
            _gather(self.posterior_mean_coef1, t, x_t) * x_start
            + _gather(self.posterior_mean_coef2, t, x_t) * x_t
        )

    def sample_steps(self, sampler_cfg) -> int:
        """How many denoiser calls `sampler_cfg` (sampler=ddpm|ddim) makes per batch."""
        if sampler_name(sampler_cfg) == "ddpm":
            return self.timesteps
        return len(self.ddim_timesteps(sampler_cfg.steps))

    @torch.no_grad()
    def sample(
        self,
        model: Denoiser,
        shape: tuple[int, ...],
        sampler_cfg,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
        model_kwargs: dict | None = None,
        progress: Callable[[], None] | None = None,
        clip_start: float | None = None,
    ) -> torch.Tensor:
        """x_0 of `shape` on `device` from the sampler that `sampler_cfg` names (DDPM, or DDIM with
        steps, eta); with `clip_start`, every step's prediction of x_0 is clipped to [-clip_start,
        clip_start]."""
        if sampler_name(sampler_cfg) == "ddpm":
            return self.p_sample_loop(
                model,
                shape,
                generator=generator,
                device=device,
                model_kwargs=model_kwargs,
                progress=progress,
                clip_start=clip_start,
            )
        return self.ddim_sample_loop(
            model,
            shape,
            sampler_cfg.steps,
            eta=sampler_cfg.eta,
            generator=generator,
            device=device,
            model_kwargs=model_kwargs,
            progress=progress,
            clip_start=clip_start,
        )

    def _predict_start(
        self,
        model: Denoiser,
        x_t: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict,
        clip_start: float | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0 predicted from the model's eps, clipped to +-clip_start when given; eps)."""
        eps = model(x_t, t, **model_kwargs)
        x_start = self.predict_start_from_eps(x_t, t, eps)
        return (x_start if clip_start is None else x_start.clamp(-clip_start, clip_start)), eps

    @torch.no_grad()
    def p_sample_loop(
        self,
        model: Denoiser,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
        model_kwargs: dict | None = None,
        progress: Callable[[], None] | None = None,
        clip_start: float | None = None,
    ) -> torch.Tensor:
        """Ancestral DDPM sampling over all T steps; returns x_0 of `shape` (noise drawn by the CPU
        `generator`)."""
        model_kwargs = model_kwargs or {}
        x_t = _randn(shape, generator, device)
        for step in reversed(range(self.timesteps)):
            t = torch.full((shape[0],), step, device=device, dtype=torch.long)
            x_start, _ = self._predict_start(model, x_t, t, model_kwargs, clip_start)
            mean = self.q_posterior_mean(x_start, x_t, t)
            if step > 0:
                noise = _randn(shape, generator, device)
                x_t = (
                    mean
                    + (0.5 * _gather(self.posterior_log_variance_clipped, t, x_t)).exp() * noise
                )
            else:
                x_t = mean
            if progress is not None:
                progress()
        return x_t

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` evenly spaced timesteps from T-1 down to 0."""
        return sorted(
            {round(i * (self.timesteps - 1) / max(steps - 1, 1)) for i in range(steps)},
            reverse=True,
        )

    @torch.no_grad()
    def ddim_sample_loop(
        self,
        model: Denoiser,
        shape: tuple[int, ...],
        steps: int,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
        model_kwargs: dict | None = None,
        progress: Callable[[], None] | None = None,
        x_end: torch.Tensor | None = None,
        clip_start: float | None = None,
    ) -> torch.Tensor:
        """DDIM (Song et al. 2021) over a subsequence of timesteps; deterministic given x_T when
        eta=0.

        `x_end` is x_T (drawn from `generator` when not given); with eta > 0 every step draws more
        noise; with `clip_start`, each step's x_0 prediction is clipped to [-clip_start,
        clip_start].
        """
        model_kwargs = model_kwargs or {}
        x_t = _randn(shape, generator, device) if x_end is None else x_end
        schedule = self.ddim_timesteps(steps)
        for current, previous in zip(schedule, [*schedule[1:], -1]):
            t = torch.full((shape[0],), current, device=device, dtype=torch.long)
            x_start, eps = self._predict_start(model, x_t, t, model_kwargs, clip_start)
            abar = float(self.alphas_cumprod[current])
            abar_prev = float(self.alphas_cumprod[previous]) if previous >= 0 else 1.0
            sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)) ** 0.5
            x_t = abar_prev**0.5 * x_start + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps
            if sigma > 0:
                x_t = x_t + sigma * _randn(shape, generator, device)
            if progress is not None:
                progress()
        return x_t
