"""Every random seed pdiff uses, derived from the run's `seed`, what it is for, and an index.

A stream is numpy's SeedSequence of (seed, purpose, index), with the purpose and a named index
hashed to integers: two purposes, or two indices of one purpose, never share a stream (no offsets
that can meet), and every seed torch accepts as a run seed works.
"""

from __future__ import annotations

import hashlib
from enum import Enum

import numpy as np
import torch

from pdiff.config import SEED_MAX


class Purpose(Enum):
    base = "base"  # base model initialisation and data order (of collection run `index`, for whole models)
    collect_run = "collect_run"  # collection run `index`: its data order
    autoencoder = "autoencoder"
    denoiser = "denoiser"
    sampling = "sampling"  # the starting noise and every sampling step
    baselines = "baselines"  # the memorisation baselines' draws
    recalibration = (
        "recalibration"  # which training rows re-estimate BatchNorm statistics at evaluation
    )
    bootstrap = "bootstrap"  # the resampled test samples (index "test_samples") and models (index: a population)
    keep_best = (
        "keep_best"  # the resampled test samples and models of "keep the best of N by validation"
    )
    batch_noise = "batch_noise"  # generator training noise at step `index` (from a training seed)
    epoch_order = "epoch_order"  # the permutation of epoch `index` (from a training seed)
    augment = "augment"  # image augmentation at step `index` (from a training seed)
    task_variants = "task_variants"  # family=variants: every task's generation settings (fixed)
    task_pooled = "task_pooled"  # family=variants: the pooled model's initialisation and data order
    task_split = "task_split"  # which tasks of a family are held out and which are trained on
    task_head = "task_head"  # a task network's head initialisation (index: the task seed; shared across tasks)
    task_order = "task_order"  # a task's data order (index: "<task>:<task seed>")
    task_control = (
        "task_control"  # the random descriptors of the generator's control, and their noise
    )


def _word(name: str) -> int:
    """A stable 64-bit integer for a name (Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def derive_seed(seed: int, purpose: Purpose, index: int | str = 0) -> int:
    """The seed for `purpose` (with `index`: a collection run, a step, an epoch, or a name such as a
    population) of a run seeded `seed`, in [0, SEED_MAX]."""
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed={seed} must be an integer in [0, 2**63 - 1]")
    key = _word(index) if isinstance(index, str) else int(index)
    if key < 0:
        raise ValueError(f"index={index} must be >= 0")
    entropy = [seed, _word(purpose.value), key, int(isinstance(index, str))]
    high, low = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32).tolist()
    return ((high << 32) | low) & SEED_MAX


def generator_for(seed: int, purpose: Purpose, index: int | str = 0) -> torch.Generator:
    """A CPU generator seeded for `purpose`; draws are moved to a device after, so they match on
    every device."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, index))
