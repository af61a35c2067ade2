"""The latent denoiser network: shapes, and the timestep embedding."""

import torch

from pdiff.generators.nets.denoiser import LatentDenoiser, timestep_embedding


def test_denoiser_shapes_and_timestep_embedding():
    net = LatentDenoiser(4, [16, 32], 32)
    x = torch.randn(5, 4, 16)
    t = torch.tensor([0, 1, 2, 500, 999])
    assert net(x, t).shape == x.shape
    emb = timestep_embedding(t, 32)
    assert emb.shape == (5, 32) and not torch.allclose(emb[0], emb[1])
