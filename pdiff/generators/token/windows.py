"""Token latents grouped in windows of W: each slot's tensor and position, and every window of
every zoo model as a training row."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pdiff.generators.token.layout import TokenLayout


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
