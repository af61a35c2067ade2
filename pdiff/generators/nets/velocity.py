"""The flow design's velocity network: a residual MLP over a flat vector, with time and (optionally)
a condition (the checkpoint's accuracy, or its task's descriptor) embedded and added in every block;
a learned null condition stands in when the condition is dropped (classifier-free guidance)."""

from __future__ import annotations

import torch
from torch import nn

from pdiff.generators.nets.denoiser import timestep_embedding

TIME_SCALE = (
    1000.0  # t in [0, 1] is embedded as t * 1000, the range the sinusoidal embedding is made for
)


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width)
        )

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.mlp(self.norm(h) + emb)


class VelocityMLP(nn.Module):
    """v(x_t, t [, condition]) for x_t [B, dim] and a condition [B] or [B, condition_dim];
    `conditioned` [B] bool says which rows see their condition."""

    def __init__(
        self,
        dim: int,
        width: int,
        depth: int,
        time_dim: int,
        conditional: bool = False,
        condition_dim: int = 1,
    ):
        super().__init__()
        self.time_dim = time_dim
        self.inp = nn.Linear(dim, width)
        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.condition_mlp = (
            nn.Sequential(nn.Linear(condition_dim, width), nn.SiLU(), nn.Linear(width, width))
            if conditional
            else None
        )
        self.null_condition = nn.Parameter(torch.zeros(width)) if conditional else None
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        condition: torch.Tensor | None = None,
        conditioned: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t * TIME_SCALE, self.time_dim).to(x_t.dtype))
        if self.condition_mlp is not None:
            if condition is None:
                emb = emb + self.null_condition
            else:
                own = self.condition_mlp(condition.view(len(x_t), -1).to(x_t.dtype))
                emb = emb + torch.where(
                    conditioned.view(-1, 1), own, self.null_condition.expand_as(own)
                )
        h = self.inp(x_t)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
