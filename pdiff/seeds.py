"""Every random seed pdiff uses, derived from the run's `seed` and what it is for.

The streams stay apart (a collection run's data order never equals the base model's), and the values are those
pdiff has always used, so a run's results do not change with this module.
"""

from __future__ import annotations

from enum import Enum

import torch


class Purpose(Enum):
    base = "base"  # base model initialisation and data order (of collection run `index`, for whole models)
    collect_run = "collect_run"  # collection run `index`: its data order
    autoencoder = "autoencoder"
    denoiser = "denoiser"
    sampling = "sampling"  # the starting noise and every sampling step
    baselines = "baselines"  # the memorisation baselines' draws
    recalibration = "recalibration"  # which training rows re-estimate BatchNorm statistics at evaluation
    bootstrap = "bootstrap"  # the resampled test samples and models of the evaluation's intervals
    keep_best = "keep_best"  # the resampled test samples and models of "keep the best of N by validation"
    batch_noise = "batch_noise"  # generator training noise at step `index` (from a training seed)
    epoch_order = "epoch_order"  # the permutation of epoch `index` (from a training seed)
    augment = "augment"  # image augmentation at step `index` (from a training seed)


_DERIVE = {
    Purpose.base: lambda seed, index: seed + 40_009 * index,
    Purpose.collect_run: lambda seed, index: seed + 10_007 * (index + 1),
    Purpose.autoencoder: lambda seed, index: seed,
    Purpose.denoiser: lambda seed, index: seed + 1,
    Purpose.sampling: lambda seed, index: seed + 20_011,
    Purpose.baselines: lambda seed, index: seed + 30_011,
    Purpose.recalibration: lambda seed, index: seed + 50_021,
    Purpose.bootstrap: lambda seed, index: seed + 60_013,
    Purpose.keep_best: lambda seed, index: seed + 70_001,
    Purpose.batch_noise: lambda seed, index: seed * 1_000_003 + index + 17,
    Purpose.epoch_order: lambda seed, index: seed * 1_000_003 + index,
    Purpose.augment: lambda seed, index: seed * 7_919 + index,
}


def derive_seed(seed: int, purpose: Purpose, index: int = 0) -> int:
    """The seed for `purpose` (with `index`: a collection run, a step or an epoch) of a run seeded `seed`."""
    return _DERIVE[purpose](seed, index)


def generator_for(seed: int, purpose: Purpose, index: int = 0) -> torch.Generator:
    """A CPU generator seeded for `purpose`; draws are moved to a device after, so they match on every device."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, index))
