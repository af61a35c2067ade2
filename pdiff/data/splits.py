"""The rules of a dataset's splits: the fewest samples a split may hold, and the validation part
carved from the training arrays."""

from __future__ import annotations

import torch

from pdiff.errors import ConfigError

MIN_SAMPLES = 10  # fewest training or test samples of a dataset: accuracies over fewer say nothing
TestPart = tuple[torch.Tensor, torch.Tensor, int]  # x_test, y_test, number of classes


def validation_split(
    y: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of training labels `y`: round(fraction x count) of each class
    held out, drawn by a permutation seeded `seed`; both in increasing order. ConfigError when
    either part would be empty."""
    generator = torch.Generator().manual_seed(int(seed))
    held = []
    for label in torch.unique(y).tolist():
        members = torch.nonzero(y == label).flatten()
        count = int(round(fraction * len(members)))
        held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    val = torch.cat(held).sort().values
    is_train = torch.ones(len(y), dtype=torch.bool)
    is_train[val] = False
    if not len(val) or not is_train.any():
        raise ConfigError(
            f"data.val_fraction={fraction} holds out {len(val)} of {len(y)} training samples for "
            "validation: both validation and training need at least one; choose a value in (0, 1), or "
            "give more training samples, so that some of each class fall on both sides"
        )
    return torch.nonzero(is_train).flatten(), val
