"""The order in which training visits its rows: a fresh permutation each epoch, set by (seed,
epoch), for the task networks and the generators alike."""

from __future__ import annotations

import functools

import torch

from pdiff.seeds import Purpose, generator_for


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the training batch at a global step: a fresh permutation per epoch, set by (seed,
    epoch)."""
    steps_per_epoch = max(n // batch_size, 1)
    epoch, index = divmod(step, steps_per_epoch)
    return _epoch_order(n, seed, epoch)[index * batch_size : (index + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """One epoch's permutation, drawn once (token zoos have millions of rows)."""
    return torch.randperm(n, generator=generator_for(seed, Purpose.epoch_order, epoch))
