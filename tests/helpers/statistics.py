"""Task networks with BatchNorm running statistics of their own, for the tests of vectors that
carry them (task.param.statistics)."""

from __future__ import annotations

import torch


def trained_statistics(
    model: torch.nn.Module, shape: tuple[int, ...], seed: int
) -> torch.nn.Module:
    """`model` after train-mode forwards on random inputs: running statistics that differ per model."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, *shape) * (1 + seed))
    return model.eval()
