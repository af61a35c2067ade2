"""Device placement, checked without a GPU: every hot path runs one step with its models on the
`meta` device.

The data and the random draws start on the CPU, as in a real run. A tensor that the code forgot to
move meets a meta tensor and raises ("... is not on the expected device meta"), as it would on a
GPU.
"""

from __future__ import annotations

import pytest
import torch

from pdiff.config import Normalization
from pdiff.data.augment import Augmentation
from pdiff.data.tasknets import digits_cnn, resnet18_cifar
from pdiff.diffusion.gaussian import build_diffusion
from pdiff.diffusion.noise import BatchNoise
from pdiff.errors import ConfigError
from pdiff.evaluation.predictions import ParameterEvaluator
from pdiff.generators.flow import FlowGenerator, build_velocity, conditioned_loss
from pdiff.generators.interface import Conditioning
from pdiff.generators.latent import build_autoencoder, build_denoiser
from pdiff.generators.nets.autoencoder import reconstruction_loss
from pdiff.generators.pca import PCABasis
from pdiff.generators.token.layout import TokenLayout, ZooTokens
from pdiff.generators.token.training import (
    build_code_denoiser,
    build_token_autoencoder,
    build_window_denoiser,
    code_diffusion_loss,
    token_reconstruction_loss,
    window_diffusion_loss,
)
from pdiff.generators.token.windows import WindowPlaces, WindowRows
from pdiff.training.devices import resolve_device
from pdiff.training.fit import build_engine, take_rows
from pdiff.zoo.collect import sgd_step, training_batch
from pdiff.zoo.params import ParamEntry, ParamNormalizer, ParamSpec, select_parameters
from tests.helpers.configs import compose_config

META = torch.device("meta")
SPEC = ParamSpec((ParamEntry("a.weight", (3, 40), 0), ParamEntry("b.bias", (9,), 120)))


def _step(model, loss_of_batch, data, cfg, rows=8):
    """One optimiser step of the plain engine on META, with the batch and its noise made as fit()
    makes them."""
    engine = build_engine(
        model, cfg.optim, compose_config(["paths.output_dir=unused"]).trainer, rows, 1, META
    )
    indices = torch.arange(rows)
    batch = take_rows(data, indices, engine.dtype, engine.device)
    loss = loss_of_batch(
        engine, batch, BatchNoise(0, 0, rows, slice(0, rows), engine.dtype, engine.device)
    )
    engine.backward(loss)
    engine.step()
    assert loss.device == META


def test_latent_design_trains_one_step_on_the_device(tmp_path):
    cfg = compose_config([f"paths.output_dir={tmp_path}"])
    _step(build_autoencoder(cfg.ae, 128), reconstruction_loss, torch.randn(16, 128), cfg.ae)
    diffusion = build_diffusion(cfg.diffusion)
    _step(
        build_denoiser(cfg.denoiser, 4),
        diffusion.training_losses,
        torch.randn(16, 4, 16),
        cfg.diffusion,
    )


def test_token_design_trains_one_step_on_the_device(tmp_path):
    cfg = compose_config(
        ["generator=token", "ae.token_size=16", "denoiser.window=4", f"paths.output_dir={tmp_path}"]
    )
    layout = TokenLayout(SPEC, cfg.ae.token_size)
    zoo = torch.randn(4, SPEC.dim)
    normalizer = ParamNormalizer.fit(SPEC, zoo, cfg.ae.normalization)
    _step(
        build_token_autoencoder(cfg.ae, layout),
        token_reconstruction_loss,
        ZooTokens(zoo, layout, normalizer),
        cfg.ae,
    )
    places = WindowPlaces(layout, cfg.denoiser.window)
    windows = places.split(torch.randn(4, layout.count, cfg.ae.token_latent_dim))
    codes = torch.randn(4, 3)
    _step(
        build_window_denoiser(cfg.denoiser, cfg.ae.token_latent_dim, layout, 3),
        window_diffusion_loss(build_diffusion(cfg.diffusion)),
        WindowRows(windows, places, codes),
        cfg.diffusion,
        rows=4,
    )
    _step(
        build_code_denoiser(cfg.denoiser, 3),
        code_diffusion_loss(build_diffusion(cfg.diffusion)),
        codes,
        cfg.diffusion,
        rows=4,
    )


def test_flow_design_with_a_pca_basis_and_guidance_trains_and_samples_on_the_device(tmp_path):
    cfg = compose_config(
        [
            "generator=flow",
            "generator.pca_components=4",
            "generator.condition=true",
            "denoiser.width=16",
            "sampler.steps=2",
            f"paths.output_dir={tmp_path}",
        ]
    )
    zoo = torch.randn(12, SPEC.dim)
    normalizer = ParamNormalizer.fit(SPEC, zoo, Normalization(cfg.generator.normalization))
    basis = PCABasis.fit(normalizer.normalize(zoo), cfg.generator.pca_components)
    rows = torch.cat(
        [basis.encode(normalizer.normalize(zoo)), torch.randn(12, 1)], 1
    )  # [x_1 | accuracy]
    _step(
        build_velocity(cfg.denoiser, basis.k, True),
        conditioned_loss(cfg.generator.condition_dropout),
        rows,
        cfg.generator,
    )
    FlowGenerator(normalizer, basis, build_velocity(cfg.denoiser, basis.k, True), (60.0, 5.0)).save(
        tmp_path, {}
    )
    flow = FlowGenerator.load(tmp_path, SPEC, cfg, META)
    assert {
        t.device
        for t in [*flow.basis.buffers(), *flow.normalizer.buffers(), *flow.velocity.parameters()]
    } == {META}
    # Guidance 2 calls the velocity with and without the target; every step stays on the device, and
    # only the last line (the result's copy to the CPU, which a meta tensor cannot give) leaves it.
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"):
        flow.sample(3, cfg.sampler, 0, Conditioning(65.0, 2.0))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_steps_run_on_the_device(sampler, tmp_path):
    cfg = compose_config(
        [
            f"sampler={sampler}",
            "diffusion.timesteps=3",
            *(["sampler.steps=2", "sampler.eta=1.0"] if sampler == "ddim" else []),
            f"paths.output_dir={tmp_path}",
        ]
    )
    diffusion = build_diffusion(cfg.diffusion)
    rng = torch.Generator().manual_seed(0)
    latent = build_denoiser(cfg.denoiser, 4).to(META)
    assert (
        diffusion.sample(latent, (2, 4, 8), cfg.sampler, generator=rng, device=META).device == META
    )
    token_cfg = compose_config(
        ["generator=token", "denoiser.window=4", f"paths.output_dir={tmp_path}"]
    )
    layout = TokenLayout(SPEC, 16)
    places = WindowPlaces(layout, token_cfg.denoiser.window)
    window = build_window_denoiser(token_cfg.denoiser, 8, layout, 3).to(META)
    codes = diffusion.sample(
        build_code_denoiser(token_cfg.denoiser, 3).to(META),
        (2, 3),
        cfg.sampler,
        generator=rng,
        device=META,
    )
    out = diffusion.sample(
        window,
        (2, 4, 8),
        cfg.sampler,
        generator=rng,
        device=META,
        model_kwargs=places.conditioning(torch.tensor([0, 1]), codes, META),
    )
    assert codes.device == META and out.device == META


@pytest.mark.parametrize("augment", [False, True])
def test_base_training_and_collection_steps_run_on_the_device(augment):
    model = (resnet18_cifar((3, 8, 8), 10) if augment else digits_cnn((1, 8, 8), 10, 4)).to(META)
    shape = (3, 8, 8) if augment else (1, 8, 8)
    x, y = torch.randn(32, *shape).to(META), torch.randint(0, 10, (32,)).to(META)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    augmentation = Augmentation(rotate_degrees=15.0) if augment else None
    assert sgd_step(model, optimizer, *training_batch(x, y, 0, 8, 0, augmentation)).device == META


@pytest.mark.parametrize("batched", [False, True])
def test_an_evaluation_chunk_runs_on_the_device(batched):
    model = digits_cnn((1, 8, 8), 10, 4)
    spec = select_parameters(model, ["bn3", "bn4"])
    evaluator = ParameterEvaluator(
        model.to(META),
        spec,
        torch.randn(20, 1, 8, 8).to(META),
        max_chunk=3,
        batched=batched,
        batch_size=7,
    )
    predictions = evaluator.predict_chunk(
        torch.randn(3, spec.dim)
    )  # generated vectors arrive on the CPU
    assert predictions.shape == (3, 20) and predictions.device == META


def test_device_cuda_without_a_gpu_names_the_setting():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: device=cuda is valid here")
    with pytest.raises(ConfigError, match=r"device=cuda is invalid: this job sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device(
        "cpu"
    )
