"""The epoch order of training rows: each row once per epoch, set by (seed, epoch)."""

import torch

from pdiff.seeds import Purpose, generator_for
from pdiff.training.batches import _epoch_order, batch_indices


def test_batches_cover_each_epoch_once_and_depend_only_on_step():
    seen = torch.cat([batch_indices(step, 100, 10, seed=3) for step in range(10)])
    assert sorted(seen.tolist()) == list(range(100))
    _epoch_order.cache_clear()  # step 13 of 10-row batches of 100 = rows 30..39 of epoch 1's permutation
    assert torch.equal(
        batch_indices(13, 100, 10, 3),
        torch.randperm(100, generator=generator_for(3, Purpose.epoch_order, 1))[30:40],
    )
    assert not torch.equal(batch_indices(10, 100, 10, 3), batch_indices(0, 100, 10, 3))
