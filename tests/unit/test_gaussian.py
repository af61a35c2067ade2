"""The Gaussian diffusion: schedule identities, q_sample statistics, training losses, DDPM and
DDIM sampling."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from pdiff.diffusion.gaussian import GaussianDiffusion, linear_betas
from pdiff.diffusion.noise import BatchNoise
from pdiff.generators.nets.denoiser import LatentDenoiser


@pytest.fixture
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(linear_betas(1000, 1e-4, 2e-2))


def _schedule_by_hand(
    timesteps: int, beta_start: float, beta_end: float
) -> tuple[list[float], list[float]]:
    """Betas and their running products, in plain Python floats (float64), one step at a time."""
    betas = [beta_start + (beta_end - beta_start) * t / (timesteps - 1) for t in range(timesteps)]
    products, running = [], 1.0
    for beta in betas:
        running *= 1.0 - beta
        products.append(running)
    return betas, products


def test_schedule_identities(diffusion):
    betas, abar = _schedule_by_hand(1000, 1e-4, 2e-2)
    assert (
        diffusion.betas.dtype == torch.float64 and diffusion.alphas_cumprod.dtype == torch.float64
    )
    assert diffusion.betas.tolist() == pytest.approx(
        betas, rel=1e-12, abs=0
    )  # float64 end to end, no float32
    assert diffusion.alphas_cumprod.tolist() == pytest.approx(abar, rel=1e-12, abs=0)
    assert float(diffusion.alphas_cumprod[0]) == pytest.approx(
        0.9999, rel=1e-15
    )  # abar_0 = 1 - beta_start
    assert float(diffusion.alphas_cumprod[1]) == pytest.approx(
        0.9999 * (1 - 1e-4 - 1.99e-2 / 999), rel=1e-15
    )
    # the product of 1 - beta_t ~ exp(-sum beta_t) = exp(-(1e-4 + 2e-2) * 500) = exp(-10.05) ~
    # 4.3e-5: pure noise
    assert 3e-5 < float(diffusion.alphas_cumprod[-1]) < 5e-5
    assert bool(
        (diffusion.alphas_cumprod[1:] < diffusion.alphas_cumprod[:-1]).all()
    )  # strictly decreasing
    one = torch.ones(1000, dtype=torch.float64)
    assert torch.allclose(
        diffusion.sqrt_alphas_cumprod**2 + diffusion.sqrt_one_minus_alphas_cumprod**2,
        one,
        rtol=0,
        atol=1e-14,
    )
    assert torch.allclose(
        diffusion.sqrt_recip_alphas_cumprod * diffusion.sqrt_alphas_cumprod, one, rtol=0, atol=1e-12
    )
    assert torch.allclose(
        diffusion.sqrt_recipm1_alphas_cumprod**2,
        1 / torch.tensor(abar, dtype=torch.float64) - 1,
        rtol=1e-10,
        atol=0,
    )
    # q(x_{t-1} | x_t, x_0), from Bayes' rule on the two Gaussians (Ho et al. 2020, eq. 7), by hand
    # at t = 1, 500, 999
    for t in (1, 500, 999):
        variance = betas[t] * (1 - abar[t - 1]) / (1 - abar[t])
        coef1 = math.sqrt(abar[t - 1]) * betas[t] / (1 - abar[t])
        coef2 = math.sqrt(1 - betas[t]) * (1 - abar[t - 1]) / (1 - abar[t])
        assert float(diffusion.posterior_variance[t]) == pytest.approx(variance, rel=1e-10)
        assert float(diffusion.posterior_mean_coef1[t]) == pytest.approx(coef1, rel=1e-10)
        assert float(diffusion.posterior_mean_coef2[t]) == pytest.approx(coef2, rel=1e-10)
    # noise-free x_t = sqrt(abar_t) x_0 has posterior mean sqrt(abar_{t-1}) x_0, at every t
    root_abar = diffusion.sqrt_alphas_cumprod
    noiseless = (
        diffusion.posterior_mean_coef1[1:] + diffusion.posterior_mean_coef2[1:] * root_abar[1:]
    )
    assert torch.allclose(noiseless, root_abar[:-1], rtol=1e-10, atol=0)
    assert diffusion.posterior_variance[0] == 0  # at t = 0 the posterior is x_0 itself
    assert bool(
        (diffusion.posterior_variance[1:] < diffusion.betas[1:]).all()
    )  # tilde beta_t < beta_t


def test_posterior_mean_recovers_x_start_combination(diffusion):
    x_start, x_t = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    t = torch.tensor([1, 10, 500, 999])
    mean = diffusion.q_posterior_mean(x_start, x_t, t)
    c1 = diffusion.posterior_mean_coef1[t].float().view(-1, 1, 1)
    c2 = diffusion.posterior_mean_coef2[t].float().view(-1, 1, 1)
    assert torch.allclose(mean, c1 * x_start + c2 * x_t)
    eps = torch.randn_like(x_start)
    assert torch.allclose(
        diffusion.predict_start_from_eps(diffusion.q_sample(x_start, t, eps), t, eps),
        x_start,
        atol=1e-3,
    )


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

    diffusion.training_losses(
        model, torch.randn(64, 1, 8), BatchNoise.whole(seed=0, step=0, size=64)
    )
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
    ddim = diffusion.ddim_sample_loop(
        model, (5, 3, 4), steps=50, generator=torch.Generator().manual_seed(0)
    )
    assert torch.allclose(ddpm, x0.expand(5, 3, 4), atol=1e-3)
    assert torch.allclose(ddim, x0.expand(5, 3, 4), atol=1e-3)


def test_ddim_is_deterministic_with_eta_zero(diffusion):
    torch.manual_seed(0)
    net = LatentDenoiser(2, [8, 16], 32).eval()
    with (
        torch.no_grad()
    ):  # a trained-looking denoiser: the zero-initialised output layer would predict eps = 0
        net.out[-1].weight.normal_(0, 0.1)
    x_end = torch.randn(3, 2, 8)

    def run(eta, seed):
        return diffusion.ddim_sample_loop(
            net,
            (3, 2, 8),
            steps=10,
            eta=eta,
            x_end=x_end.clone(),
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(
        run(0.0, 7), run(0.0, 8)
    )  # the same x_T, other random streams: the same sample
    assert not torch.allclose(run(1.0, 7), run(1.0, 8))  # with eta > 0 every step draws noise
    assert diffusion.ddim_timesteps(10)[0] == 999 and diffusion.ddim_timesteps(10)[-1] == 0


@pytest.mark.parametrize("sampler", [{"name": "ddpm"}, {"name": "ddim", "steps": 5, "eta": 0.0}])
def test_clipped_start_predictions_keep_a_wrong_denoiser_inside_the_bound(sampler):
    """A denoiser that predicts eps = -x_t pushes x_0 far out; with clip_start every step's x_0
    prediction, and so the sample, stays within the bound (the token design clips at its training
    latents' largest |value|)."""
    diffusion = GaussianDiffusion(linear_betas(50))
    cfg = OmegaConf.create(sampler)

    def wrong(x_t, t):
        return -x_t

    free = diffusion.sample(wrong, (4, 3), cfg, generator=torch.Generator().manual_seed(0))
    clipped = diffusion.sample(
        wrong, (4, 3), cfg, generator=torch.Generator().manual_seed(0), clip_start=2.0
    )
    assert free.abs().max() > 4 and clipped.abs().max() <= 2.0 + 1e-6
