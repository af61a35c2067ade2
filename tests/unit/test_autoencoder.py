import pytest
import torch

from pdiff.nets.autoencoder import build_autoencoder
from tests.conftest import compose_config


@pytest.mark.parametrize("name", ["mlp", "pdiff_v1", "pdiff_v2"])
@pytest.mark.parametrize("dim", [128, 2048, 777])
def test_shapes_noise_and_eval_determinism(name, dim, tmp_path):
    cfg = compose_config([f"ae={name}", f"paths.output_dir={tmp_path}"])
    ae = build_autoencoder(cfg.ae, dim)
    x = torch.randn(6, dim)
    z = ae.eval().encode(x)
    assert z.shape == (6, *ae.latent_shape)
    assert ae.decode(z).shape == (6, dim)
    assert torch.equal(ae(x), ae(x))  # eval mode: no noise
    ae.train()
    assert not torch.equal(ae.encode(x), ae.encode(x))  # training mode: input and latent noise
    assert ae.loss(x).ndim == 0
