import pytest
import torch

from pdiff.diffusion.noise import BatchNoise
from pdiff.generators.latent import build_autoencoder
from pdiff.generators.nets.autoencoder import reconstruction_loss
from tests.helpers.configs import compose_config


@pytest.mark.parametrize("name", ["mlp", "pdiff_v1", "pdiff_v2"])
@pytest.mark.parametrize("dim", [128, 2048, 777])
def test_shapes_noise_and_eval_determinism(name, dim, tmp_path):
    cfg = compose_config([f"ae={name}", f"paths.output_dir={tmp_path}"])
    ae = build_autoencoder(cfg.ae, dim)
    x = torch.randn(6, dim)
    z = ae.eval().encode(x)
    assert z.shape == (6, *ae.latent_shape)
    assert ae.decode(z).shape == (6, dim)
    assert torch.equal(ae(x), ae(x))  # no BatchNoise: deterministic
    noisy = [ae(x, BatchNoise.whole(seed=0, step=step, size=6)) for step in (0, 0, 1)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(
        noisy[0], noisy[2]
    )  # noise is set by (seed, step)
    assert not torch.equal(noisy[0], ae(x))
    assert reconstruction_loss(ae, x, BatchNoise.whole(0, 0, 6)).ndim == 0
