"""Crop, flip and rotation of image batches, drawn on the CPU."""

import torch

from pdiff.data.augment import augment_batch


def test_augment_batch_crops_and_flips_within_bounds():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    assert set(out.unique().tolist()) <= set(x.unique().tolist()) | {0.0}


def test_rotation_augmentation_rotates_with_cpu_drawn_angles():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 6:] = 1.0  # a bar right of the centre
    batch = image.expand(64, 1, 9, 9).contiguous()
    plain = augment_batch(batch, torch.Generator().manual_seed(0), pad=0)
    rotated = augment_batch(batch, torch.Generator().manual_seed(0), pad=0, rotate_degrees=90.0)
    again = augment_batch(batch, torch.Generator().manual_seed(0), pad=0, rotate_degrees=90.0)
    assert torch.equal(rotated, again) and not torch.allclose(rotated, plain)
    assert float(rotated.min()) >= 0.0 and float(rotated.max()) <= 1.0 + 1e-6
    assert (
        float(rotated[:, 0, :4, 4].sum() + rotated[:, 0, 5:, 4].sum()) > 0
    )  # some bars turned to vertical
