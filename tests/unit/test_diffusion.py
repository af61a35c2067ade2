import math

import pytest
import torch

from pdiff.diffusion import GaussianDiffusion, linear_betas
from pdiff.nets.denoiser import LatentDenoiser, timestep_embedding
from pdiff.noise import BatchNoise


@pytest.fixture
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(linear_betas(1000, 1e-4, 2e-2))


def test_schedule_identities(diffusion):
    betas = diffusion.betas
    assert betas.dtype == torch.float64 and len(betas) == 1000
    assert torch.allclose(diffusion.alphas_cumprod, torch.cumprod(1 - betas, 0))
    assert torch.allclose(diffusion.sqrt_alphas_cumprod**2 + diffusion.sqrt_one_minus_alphas_cumprod**2,
                          torch.ones(1000, dtype=torch.float64))
    expected_var = betas[1:] * (1 - diffusion.alphas_cumprod[:-1]) / (1 - diffusion.alphas_cumprod[1:])
    assert torch.allclose(diffusion.posterior_variance[1:], expected_var)
    assert diffusion.posterior_variance[0] == 0
    assert 0 < float(diffusion.alphas_cumprod[-1]) < 1e-4  # x_T is close to pure noise


def test_posterior_mean_recovers_x_start_combination(diffusion):
    x_start, x_t = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    t = torch.tensor([1, 10, 500, 999])
    mean = diffusion.q_posterior_mean(x_start, x_t, t)
    c1 = diffusion.posterior_mean_coef1[t].float().view(-1, 1, 1)
    c2 = diffusion.posterior_mean_coef2[t].float().view(-1, 1, 1)
    assert torch.allclose(mean, c1 * x_start + c2 * x_t)
    eps = torch.randn_like(x_start)
    assert torch.allclose(diffusion.predict_start_from_eps(diffusion.q_sample(x_start, t, eps), t, eps), x_start,
                          atol=1e-3)


@pytest.mark.parametrize("step", [0, 250, 999])
def test_q_sample_statistics(diffusion, step):
    torch.manual_seed(0)
    x_start = torch.full((200_000,), 1.5)
    x_t = diffusion.q_sample(x_start, torch.full((200_000,), step))
    abar = float(diffusion.alphas_cumprod[step])
    assert x_t.mean().item() == pytest.approx(math.sqrt(abar) * 1.5, abs=0.01)
    assert x_t.var().item() == pytest.approx(1 - abar, abs=0.01 + 0.01 * (1 - abar))


def test_training_loss_uses_one_timestep_per_sample(diffusion):
    seen = []

    def model(x_t, t):
        seen.append(t.clone())
        return torch.zeros_like(x_t)

    diffusion.training_losses(model, torch.randn(64, 1, 8), BatchNoise.whole(seed=0, step=0, size=64))
    assert seen[0].shape == (64,) and len(seen[0].unique()) > 32


def _exact_denoiser(diffusion, x0):
    """The Bayes-optimal eps predictor when the data is the single point x0."""

    def model(x_t, t):
        a = diffusion.sqrt_alphas_cumprod[t].float().view(-1, 1, 1)
        s = diffusion.sqrt_one_minus_alphas_cumprod[t].float().view(-1, 1, 1)
        return (x_t - a * x0) / s

    return model


def test_ddpm_and_ddim_sample_the_data_point_with_an_exact_denoiser(diffusion):
    x0 = torch.linspace(-2, 2, 12).view(1, 3, 4)
    model = _exact_denoiser(diffusion, x0)
    ddpm = diffusion.p_sample_loop(model, (5, 3, 4), generator=torch.Generator().manual_seed(0))
    ddim = diffusion.ddim_sample_loop(model, (5, 3, 4), steps=50, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ddpm, x0.expand(5, 3, 4), atol=1e-3)
    assert torch.allclose(ddim, x0.expand(5, 3, 4), atol=1e-3)


def test_ddim_is_deterministic_with_eta_zero(diffusion):
    torch.manual_seed(0)
    net = LatentDenoiser(2, [8, 16], 32).eval()
    with torch.no_grad():  # a trained-looking denoiser: the zero-initialised output layer would predict eps = 0
        net.out[-1].weight.normal_(0, 0.1)
    x_end = torch.randn(3, 2, 8)

    def run(eta, seed):
        return diffusion.ddim_sample_loop(net, (3, 2, 8), steps=10, eta=eta, x_end=x_end.clone(),
                                          generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0.0, 7), run(0.0, 8))  # the same x_T, other random streams: the same sample
    assert not torch.allclose(run(1.0, 7), run(1.0, 8))  # with eta > 0 every step draws noise
    assert diffusion.ddim_timesteps(10)[0] == 999 and diffusion.ddim_timesteps(10)[-1] == 0


def test_denoiser_shapes_and_timestep_embedding():
    net = LatentDenoiser(4, [16, 32], 32)
    x = torch.randn(5, 4, 16)
    t = torch.tensor([0, 1, 2, 500, 999])
    assert net(x, t).shape == x.shape
    emb = timestep_embedding(t, 32)
    assert emb.shape == (5, 32) and not torch.allclose(emb[0], emb[1])
