"""The validation part carved from the training arrays, per class and by its seed."""

import pytest
import torch

from pdiff.data.splits import validation_split
from pdiff.errors import ConfigError


def test_validation_is_carved_per_class_fixed_by_its_seed_and_apart_from_training():
    y = torch.arange(10).repeat_interleave(
        torch.tensor([30, 40, 50, 60, 70, 80, 90, 100, 110, 120])
    )
    train, val = validation_split(y, 0.2, seed=0)
    assert torch.equal(torch.bincount(y[val]), torch.tensor([6, 8, 10, 12, 14, 16, 18, 20, 22, 24]))
    assert not set(train.tolist()) & set(val.tolist()) and len(train) + len(val) == len(y)
    again, other = validation_split(y, 0.2, seed=0), validation_split(y, 0.2, seed=1)
    assert torch.equal(again[1], val) and not torch.equal(other[1], val)
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.01 holds out 0 of 10"):
        validation_split(torch.arange(10), 0.01, seed=0)
