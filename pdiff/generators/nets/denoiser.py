"""The latent denoiser: a 1-D conv encoder-decoder with additive skips and a timestep embedding per
block."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of per-sample timesteps: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class TimeBlock(nn.Module):
    """Norm-SiLU-conv, add the timestep projection, norm-SiLU-conv, residual."""

    def __init__(self, c_in: int, c_out: int, time_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(torch.nn.functional.silu(self.norm1(x))) + self.time(emb)[:, :, None]
        h = self.conv2(torch.nn.functional.silu(self.norm2(h)))
        return h + self.skip(x)


class LatentDenoiser(nn.Module):
    """Predicts eps for latents [B, C, L] at timesteps t [B] (p-diff's 'UNet': no down-sampling)."""

    def __init__(self, in_channels: int, channels: list[int], time_dim: int):
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, 4 * time_dim), nn.SiLU(), nn.Linear(4 * time_dim, time_dim)
        )
        self.stem = nn.Conv1d(in_channels, channels[0], 3, padding=1)
        widths = [channels[0], *channels]
        self.down = nn.ModuleList(
            TimeBlock(a, b, time_dim) for a, b in zip(widths[:-1], widths[1:])
        )
        back = [*reversed(channels)]
        self.up = nn.ModuleList(
            TimeBlock(a, b, time_dim) for a, b in zip(back, [*back[1:], channels[0]])
        )
        self.out = nn.Sequential(
            nn.GroupNorm(_groups(channels[0]), channels[0]),
            nn.SiLU(),
            nn.Conv1d(channels[0], in_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.time_dim))
        h = self.stem(x_t)
        skips = []
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        for block in self.up:
            h = block(h + skips.pop(), emb)
        return self.out(h)
