"""Random draws for one global training batch, the same on every rank; each rank keeps its own rows.

Drawing per (seed, step) rather than from the global RNG makes a run independent of how many ranks
share the batch and of where it was interrupted: 2 ranks, 1 rank and a resumed run see the same
noise.
"""

from __future__ import annotations

import torch

from pdiff.seeds import Purpose, generator_for


class BatchNoise:
    """Noise for a batch of `global_size` samples at one step, sliced to `rows` (this rank's
    micro-batch)."""

    def __init__(
        self,
        seed: int,
        step: int,
        global_size: int,
        rows: slice,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        self.generator = generator_for(seed, Purpose.batch_noise, step)
        self.global_size, self.rows, self.dtype, self.device = (
            global_size,
            rows,
            dtype,
            torch.device(device),
        )

    @classmethod
    def whole(
        cls, seed: int, step: int, size: int, device: torch.device | str = "cpu"
    ) -> BatchNoise:
        """Noise for a batch held whole by one process."""
        return cls(seed, step, size, slice(0, size), device=device)

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard normal [rows, *shape], drawn on the CPU (the same numbers on every device), then
        moved."""
        draw = torch.randn(self.global_size, *shape, generator=self.generator)
        return draw[self.rows].to(device=self.device, dtype=self.dtype)

    def rand(self) -> torch.Tensor:
        """Uniform in [0, 1), one per row."""
        return torch.rand(self.global_size, generator=self.generator)[self.rows].to(
            device=self.device, dtype=self.dtype
        )

    def randint(self, high: int) -> torch.Tensor:
        """Uniform integers in [0, high), one per row."""
        return torch.randint(0, high, (self.global_size,), generator=self.generator)[self.rows].to(
            self.device
        )


def sampler_name(sampler_cfg) -> str:
    """The sampler a `sampler` node names (ddpm, ddim, euler, heun), whether it holds the name or
    its enum."""
    return str(getattr(sampler_cfg.name, "value", sampler_cfg.name))
