import pytest
import torch
from omegaconf import OmegaConf

from pdiff.config import SamplerName, validate
from pdiff.data.tasknets import mlp_bn
from pdiff.diffusion.flow_matching import flow_matching_loss, sample_flow
from pdiff.diffusion.noise import BatchNoise
from pdiff.errors import ConfigError
from pdiff.generators import design_class
from pdiff.generators.flow import FlowGenerator
from pdiff.generators.flow_schemas import FlowSamplerConfig
from pdiff.generators.interface import Conditioning
from pdiff.generators.nets.velocity import VelocityMLP
from pdiff.generators.pca import PCABasis
from pdiff.seeds import Purpose, generator_for
from pdiff.tracking import Tracker
from pdiff.zoo.params import ParamNormalizer, select_parameters
from pdiff.zoo.store import ParamZoo
from tests.helpers.configs import compose_config


def test_the_straight_line_velocity_has_zero_loss():
    target = torch.tensor([[1.0, -2.0, 0.5]]).repeat(8, 1)

    def oracle(x_t, t):  # the velocity toward the one data point, v = (x_1 - x_t) / (1 - t)
        return (target - x_t) / (1 - t)[:, None]

    assert float(flow_matching_loss(oracle, target, BatchNoise.whole(0, 3, 8))) < 1e-10
    assert (
        float(
            flow_matching_loss(
                lambda x_t, t: torch.zeros_like(x_t), target, BatchNoise.whole(0, 3, 8)
            )
        )
        > 0.1
    )


@pytest.mark.parametrize(
    "name, expected", [(SamplerName.euler, 0.5 * (4 - 1) / 4), (SamplerName.heun, 0.5)]
)
def test_euler_and_heun_integrate_a_time_dependent_field(name, expected):
    cfg = OmegaConf.structured(FlowSamplerConfig(name=name, steps=4))
    start = torch.randn(3, 2, generator=torch.Generator().manual_seed(5))
    end = sample_flow(
        lambda x, t: t[:, None].expand_as(x),
        (3, 2),
        cfg,
        torch.Generator().manual_seed(5),
        torch.device("cpu"),
    )
    assert torch.allclose(end - start, torch.full((3, 2), expected))  # dx/dt = t: x(1) = x(0) + 1/2


def test_temperature_scales_the_starting_noise():
    cold = OmegaConf.structured(FlowSamplerConfig(steps=3, temperature=0.25))
    start = torch.randn(3, 2, generator=torch.Generator().manual_seed(5))
    end = sample_flow(
        lambda x, t: torch.zeros_like(x),
        (3, 2),
        cold,
        torch.Generator().manual_seed(5),
        torch.device("cpu"),
    )
    assert torch.allclose(end, 0.25 * start)
    with pytest.raises(ConfigError, match=r"sampler.temperature=0.0 is invalid"):
        validate(compose_config(["generator=flow", "sampler.temperature=0"]))


def test_pca_basis_whitens_the_zoo_and_decodes_its_span_exactly():
    torch.manual_seed(0)
    z = torch.randn(30, 4) @ torch.randn(4, 12) + 3.0  # rank 4
    basis = PCABasis.fit(z, 6)
    assert basis.k == 6 and torch.allclose(basis.decode(basis.encode(z)), z, atol=1e-4)
    assert torch.allclose(basis.encode(z)[:, :4].std(0), torch.ones(4), atol=1e-4)
    assert PCABasis.fit(z, 100).k == 12 and PCABasis.fit(z, 0).encode(z) is z


def _zoo(k: int = 24) -> ParamZoo:
    torch.manual_seed(0)
    spec = select_parameters(mlp_bn((6,), 4, [8, 8]), ["bn2"])
    vectors = torch.randn(k, spec.dim) * 0.1 + torch.linspace(-1, 1, spec.dim)
    return ParamZoo(vectors, torch.linspace(60, 70, k, dtype=torch.float64), spec, {})


@pytest.mark.parametrize("pca, condition", [(0, False), (5, True)])
def test_flow_design_trains_saves_loads_and_samples_the_same(pca, condition, tmp_path):
    cfg = compose_config(
        [
            "generator=flow",
            f"generator.pca_components={pca}",
            f"generator.condition={condition}",
            "generator.optim.steps=30",
            "generator.optim.warmup_steps=5",
            "denoiser.width=32",
            "denoiser.depth=2",
            "sampler.steps=5",
            f"paths.output_dir={tmp_path}",
        ]
    )
    zoo, tracker = _zoo(), Tracker(tmp_path, cfg.logger, {}, enabled=False)
    trained = FlowGenerator.train(
        zoo, cfg, tmp_path, tracker, lambda phase: None, torch.device("cpu")
    )
    trained.save(tmp_path, {})
    loaded = FlowGenerator.load(tmp_path, zoo.spec, cfg, torch.device("cpu"))
    aim = Conditioning(70.0, 2.0) if condition else None
    first, again = trained.sample(6, cfg.sampler, 1, aim), loaded.sample(6, cfg.sampler, 1, aim)
    assert (
        first.shape == (6, zoo.spec.dim)
        and first.isfinite().all()
        and torch.allclose(first, again, atol=1e-6)
    )
    if condition:
        assert not torch.allclose(loaded.sample(6, cfg.sampler, 1, Conditioning(60.0, 2.0)), again)


def test_a_target_accuracy_needs_a_conditioned_flow(tmp_path):
    for overrides in (["generate.target_acc=75"], ["generator=flow", "generate.target_acc=75"]):
        with pytest.raises(
            ConfigError, match="generate.target_acc=75.0 needs a generator trained on"
        ):
            design_class(compose_config([*overrides, f"paths.output_dir={tmp_path}"]))
    design_class(
        compose_config(
            [
                "generator=flow",
                "generator.condition=true",
                "generate.target_acc=75",
                f"paths.output_dir={tmp_path}",
            ]
        )
    )
    with pytest.raises(ConfigError, match="sampler=ddim does not fit generator=flow"):
        design_class(
            compose_config(["generator=flow", "sampler=ddim", f"paths.output_dir={tmp_path}"])
        )


def test_target_quantile_aims_at_the_zoos_accuracies(tmp_path):
    accuracy = torch.tensor([60.0, 70.0, 65.0, 72.5], dtype=torch.float64)
    best = compose_config(["generator=flow_conditioned", f"paths.output_dir={tmp_path}"])
    assert Conditioning.from_config(best.generate, accuracy) == Conditioning(
        72.5, best.generate.guidance
    )
    gentle = compose_config(
        ["generator=flow_conditioned", "generate.guidance=1.5", f"paths.output_dir={tmp_path}"]
    )
    assert Conditioning.from_config(gentle.generate, accuracy) == Conditioning(72.5, 1.5)
    median = compose_config(
        [
            "generator=flow_conditioned",
            "generate.target_quantile=0.5",
            f"paths.output_dir={tmp_path}",
        ]
    )
    assert Conditioning.from_config(median.generate, accuracy).target_acc == pytest.approx(67.5)
    plain = compose_config(["generator=flow", f"paths.output_dir={tmp_path}"])
    assert Conditioning.from_config(plain.generate, accuracy) is None
    with pytest.raises(
        ConfigError, match="generate.target_quantile=0.5 needs a generator trained on"
    ):
        design_class(
            compose_config(["generate.target_quantile=0.5", f"paths.output_dir={tmp_path}"])
        )


def test_guidance_mixes_the_conditional_and_unconditional_velocities_linearly():
    """One Euler step from x_0 gives x_0 + v(x_0, 0): the sample shows the velocity that guidance w
    made."""
    torch.manual_seed(0)
    velocity = VelocityMLP(5, 16, 2, 8, conditional=True).eval()
    with (
        torch.no_grad()
    ):  # trained-looking: the zero-initialised output layer would give v = 0 for every condition
        velocity.out[-1].weight.normal_(0, 0.5)
        velocity.null_condition.normal_(0, 1.0)
    stats = (65.0, 4.0)
    flow = FlowGenerator(ParamNormalizer(5), PCABasis(5, 0), velocity, stats)
    one_step = OmegaConf.structured(FlowSamplerConfig(name=SamplerName.euler, steps=1))
    x0 = torch.randn(6, 5, generator=generator_for(3, Purpose.sampling))
    t0 = torch.zeros(6)
    with torch.no_grad():
        conditional = velocity(
            x0, t0, torch.full((6,), (71.0 - stats[0]) / stats[1]), torch.ones(6, dtype=torch.bool)
        )
        unconditional = velocity(x0, t0)
    assert not torch.allclose(conditional, unconditional, atol=1e-3)

    def sample(guidance):
        return flow.sample(6, one_step, 3, Conditioning(71.0, guidance))

    assert torch.allclose(flow.sample(6, one_step, 3, None), x0 + unconditional, atol=1e-6)
    assert torch.allclose(sample(0.0), x0 + unconditional, atol=1e-6)
    assert torch.allclose(sample(1.0), x0 + conditional, atol=1e-6)
    for guidance in (0.5, 3.0):
        expected = x0 + unconditional + guidance * (conditional - unconditional)
        assert torch.allclose(sample(guidance), expected, atol=1e-5), guidance
