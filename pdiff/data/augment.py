"""Training-time augmentation of image batches: random crop, flip and rotation, drawn on the CPU
so a batch is the same on every device."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Augmentation:
    """What `data.augment` and `data.rotate_degrees` ask for, applied to a batch with a CPU
    generator."""

    rotate_degrees: float = 0.0
    pad: int = 4

    @classmethod
    def from_config(cls, data_cfg) -> Augmentation | None:
        """The augmentation of `data`, or None when data.augment is false."""
        return cls(float(data_cfg.rotate_degrees)) if data_cfg.augment else None

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment_batch(x, generator, self.pad, self.rotate_degrees)


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, pad: int = 4, rotate_degrees: float = 0.0
) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, per image ([B, C, H, W] in, same out, on
    x's device), then a random rotation in [-rotate_degrees, rotate_degrees] when that is > 0
    (bilinear, zero fill).

    Every random number is drawn by the CPU `generator` and moved, so the batch is the same on every
    device.
    """
    batch, _, height, width = x.shape
    device = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(device)
    dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(device)
    rows = (dy.view(-1, 1) + torch.arange(height, device=device)).view(batch, 1, height, 1)
    cols = (dx.view(-1, 1) + torch.arange(width, device=device)).view(batch, 1, 1, width)
    batch_idx = torch.arange(batch, device=device).view(batch, 1, 1, 1)
    channel_idx = torch.arange(x.shape[1], device=device).view(1, -1, 1, 1)
    out = padded[batch_idx, channel_idx, rows, cols]
    flip = (torch.rand(batch, generator=generator) < 0.5).to(device)
    out = torch.where(
        flip.view(-1, 1, 1, 1), out.flip(-1), out
    )  # no boolean indexing: no host sync
    if rotate_degrees <= 0:
        return out
    angle = (torch.rand(batch, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(
        rotate_degrees
    )
    cos, sin = angle.cos().float().to(device), angle.sin().float().to(device)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = torch.nn.functional.affine_grid(
        theta.to(out.dtype), list(out.shape), align_corners=False
    )
    return torch.nn.functional.grid_sample(
        out, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
