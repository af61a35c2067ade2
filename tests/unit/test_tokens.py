"""Parameter tokens, the memory-mapped zoo, and the token networks."""

from __future__ import annotations

import pytest
import torch

from pdiff.config import Normalization
from pdiff.diffusion.noise import BatchNoise
from pdiff.generators.interface import Conditioning
from pdiff.generators.nets.token_networks import TokenAutoencoder, WindowDenoiser
from pdiff.generators.token.design import TokenGenerator
from pdiff.generators.token.layout import TokenLayout, ZooTokens
from pdiff.generators.token.training import build_token_autoencoder, build_window_denoiser
from pdiff.generators.token.windows import WindowPlaces, WindowRows
from pdiff.tracking import Tracker
from pdiff.zoo.params import ParamEntry, ParamNormalizer, ParamSpec
from pdiff.zoo.store import ParamZoo
from tests.helpers.configs import compose_config
from tests.helpers.runs import write_zoo

SPEC = ParamSpec(
    (
        ParamEntry("conv.weight", (3, 50), 0),
        ParamEntry("bn.bias", (7,), 150),
        ParamEntry("fc.weight", (130,), 157),
    )
)


def saved_zoo(tmp_path, k: int = 5) -> ParamZoo:
    zoo = ParamZoo(torch.randn(k, SPEC.dim), torch.rand(k, dtype=torch.float64) * 100, SPEC, {})
    write_zoo(tmp_path, zoo)
    return zoo


def test_tokens_never_span_two_tensors_and_pad_with_zeros():
    layout = TokenLayout(SPEC, 64)
    assert layout.tensor_ids.tolist() == [0, 0, 0, 1, 2, 2, 2]
    assert layout.positions.tolist() == [0, 1, 2, 0, 0, 1, 2]
    assert layout.lengths.tolist() == [64, 64, 22, 7, 64, 64, 2]
    vectors = torch.randn(2, SPEC.dim)
    batch = layout.gather(vectors, torch.tensor([1]), torch.tensor([2]))
    assert torch.equal(batch.values[0, :22], vectors[1, 128:150])
    assert torch.equal(batch.values[0, 22:], torch.zeros(42))


def test_scatter_inverts_gather_for_every_model():
    layout = TokenLayout(SPEC, 16)
    vectors = torch.randn(3, SPEC.dim)
    tokens = torch.arange(layout.count)
    for model in range(3):
        out = torch.full((SPEC.dim,), float("nan"))
        layout.scatter(
            layout.gather(vectors, torch.full_like(tokens, model), tokens).values, tokens, out
        )
        assert torch.equal(out, vectors[model])


def test_memory_mapped_zoo_reads_the_same_values_as_the_one_in_memory(tmp_path):
    zoo = saved_zoo(tmp_path)
    mapped = ParamZoo.load(tmp_path)
    assert mapped.vectors.shape == (5, SPEC.dim) and torch.equal(mapped.vectors, zoo.vectors)
    written = ParamZoo.load(tmp_path)
    written.vectors[0, 0] = 123.0  # copy-on-write: the file on disk never changes
    assert torch.equal(ParamZoo.load(tmp_path).vectors, zoo.vectors)
    assert torch.equal(mapped.val_accuracy, zoo.val_accuracy)
    for mode in Normalization:
        assert torch.equal(
            ParamNormalizer.fit(SPEC, mapped.vectors, mode).std,
            ParamNormalizer.fit(SPEC, zoo.vectors, mode).std,
        )
    normalizer = ParamNormalizer.fit(SPEC, zoo.vectors, Normalization.per_tensor)
    layout = TokenLayout(SPEC, 32)
    rows = torch.tensor([0, 7, len(ZooTokens(zoo.vectors, layout, normalizer)) - 1])
    from_map = ZooTokens(mapped.vectors, layout, normalizer).take(
        rows, torch.float32, torch.device("cpu")
    )
    from_memory = ZooTokens(zoo.vectors, layout, normalizer).take(
        rows, torch.float32, torch.device("cpu")
    )
    assert torch.equal(from_map.values, from_memory.values)
    assert from_map.tensor_ids.tolist() == [0, 2, 2] and from_map.positions.tolist() == [0, 1, 4]
    # normalised per tensor, padding stays exactly zero
    expected = (zoo.vectors[0, :32] - normalizer.mean[0]) / normalizer.std[0]
    assert torch.allclose(from_map.values[0], expected)
    assert torch.equal(from_map.values[2, 2:], torch.zeros(30))


def test_windows_pad_the_last_window_and_mark_its_slots():
    layout = TokenLayout(SPEC, 64)  # 7 tokens
    places = WindowPlaces(layout, 3)
    assert places.count == 3
    assert places.tensor_ids.tolist() == [[0, 0, 0], [1, 2, 2], [2, 3, 3]]  # 3 = padding
    latents = torch.randn(2, 7, 4)
    windows = places.split(latents)
    assert windows.shape == (6, 3, 4)
    assert torch.equal(windows[5, 0], latents[1, 6]) and torch.equal(
        windows[5, 1:], torch.zeros(2, 4)
    )
    codes = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # one code per model
    batch = WindowRows(windows, places, codes).take(
        torch.tensor([5, 1]), torch.float32, torch.device("cpu")
    )
    assert batch.tensor_ids.tolist() == [[2, 3, 3], [1, 2, 2]]
    assert batch.codes.tolist() == [
        [3.0, 4.0],
        [1.0, 2.0],
    ]  # window 5 is model 1's, window 1 model 0's


def test_token_networks_have_no_weight_that_grows_with_the_vector(tmp_path):
    def size(module):
        return sum(p.numel() for p in module.parameters())

    cfg = compose_config(["generator=token", f"paths.output_dir={tmp_path}"])
    small = TokenLayout(SPEC, cfg.ae.token_size)
    large = TokenLayout(
        ParamSpec(
            (
                ParamEntry("w", (3_000_000,), 0),
                ParamEntry("b", (5,), 3_000_000),
                ParamEntry("c", (9,), 3_000_005),
            )
        ),
        cfg.ae.token_size,
    )
    assert small.count == 7 and large.count > 40_000  # 3 tensors each, D differs by 10^4
    assert size(build_token_autoencoder(cfg.ae, small)) == size(
        build_token_autoencoder(cfg.ae, large)
    )
    latent = cfg.ae.token_latent_dim
    code = cfg.ae.code_components
    assert size(build_window_denoiser(cfg.denoiser, latent, small, code)) == size(
        build_window_denoiser(cfg.denoiser, latent, large, code)
    )
    assert (
        large.positions.max() == 3_000_000 // 64 - 1
    )  # positions are a sinusoidal code, not a table


def test_token_autoencoder_adds_noise_only_when_training_and_denoiser_starts_at_zero():
    torch.manual_seed(0)
    ae = TokenAutoencoder(16, 3, 4, [32], 8, input_noise=0.01, latent_noise=0.1)
    values, ids, positions = torch.randn(6, 16), torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6)
    assert torch.equal(ae(values, ids, positions), ae(values, ids, positions))
    noisy = ae(values, ids, positions, BatchNoise.whole(0, 0, 6))
    assert noisy.shape == (6, 16) and not torch.equal(noisy, ae(values, ids, positions))
    denoiser = WindowDenoiser(4, 3, 32, 1, 4, 16)
    eps = denoiser(
        torch.randn(2, 5, 4),
        torch.tensor([3, 900]),
        torch.zeros(2, 5, dtype=torch.long),
        torch.arange(5).repeat(2, 1),
    )
    assert eps.shape == (2, 5, 4) and torch.equal(eps, torch.zeros_like(eps))


def test_scatter_undoes_the_normalisation_that_gather_applied():
    layout = TokenLayout(SPEC, 16)
    vectors = torch.randn(4, SPEC.dim) * 3 + 1
    normalizer = ParamNormalizer.fit(SPEC, vectors, Normalization.per_coordinate)
    tokens = torch.arange(layout.count)
    out = torch.zeros(SPEC.dim)
    layout.scatter(
        layout.gather(vectors, torch.full_like(tokens, 2), tokens, normalizer).values,
        tokens,
        out,
        normalizer,
    )
    assert torch.allclose(out, vectors[2], atol=1e-5)


def two_kinds_zoo() -> tuple[ParamSpec, torch.Tensor, torch.Tensor, torch.Tensor]:
    """40 networks of 128 values of two kinds, +3v and -3v (alternating) plus a little noise: the
    spec, v, each network's kind (+-1) and the vectors."""
    spec = ParamSpec((ParamEntry("w", (128,), 0),))
    generator = torch.Generator().manual_seed(0)
    pattern = torch.randint(0, 2, (128,), generator=generator).float() * 2 - 1
    kinds = torch.arange(40) % 2 * 2 - 1.0
    vectors = 3 * kinds[:, None] * pattern + 0.1 * torch.randn(40, 128, generator=generator)
    return spec, pattern, kinds, vectors


def trained_and_loaded(zoo: ParamZoo, cfg, directory) -> tuple[TokenGenerator, TokenGenerator]:
    """A token generator trained on `zoo`, and the same saved to `directory` and loaded back."""
    trained = TokenGenerator.train(
        zoo,
        cfg,
        directory,
        Tracker(directory, cfg.logger, {}, enabled=False),
        lambda phase: None,
        torch.device("cpu"),
    )
    trained.save(directory, {})
    return trained, TokenGenerator.load(directory, zoo.spec, cfg, torch.device("cpu"))


@pytest.mark.parametrize("code_components", [2, 0])
def test_windows_of_one_generated_network_come_from_one_model(code_components, tmp_path):
    """A zoo of two kinds of network, +3v and -3v over every window: given its model's code, every
    window of a generated network takes the same kind (saved and loaded alike); sampled
    independently (code_components=0), the windows of one network mix the kinds."""
    spec, pattern, kinds, vectors = two_kinds_zoo()  # 8 tokens of 16, 4 windows of 2
    zoo = ParamZoo(vectors, torch.full((40,), 60.0, dtype=torch.float64), spec, {})
    cfg = compose_config(
        [
            "generator=token",
            "sampler=ddim",
            "sampler.steps=20",
            "ae.token_size=16",
            f"ae.code_components={code_components}",
            "ae.hidden=[64]",
            "ae.optim.steps=100",
            "ae.optim.warmup_steps=10",
            "denoiser.window=2",
            "denoiser.width=32",
            "denoiser.depth=1",
            "denoiser.code.width=32",
            "denoiser.code.depth=1",
            "denoiser.code.optim.steps=200",
            "diffusion.optim.steps=200",
            "diffusion.optim.warmup_steps=10",
            "diffusion.optim.batch_size=32",
            f"paths.output_dir={tmp_path}",
        ]
    )
    trained, loaded = trained_and_loaded(zoo, cfg, tmp_path)
    sampled = loaded.sample(40, cfg.sampler, 0)
    assert torch.allclose(sampled, trained.sample(40, cfg.sampler, 0), atol=1e-5)
    kind_per_window = (sampled * pattern).view(40, 4, 32).mean(-1).sign()  # [model, window]
    one_kind = (kind_per_window == kind_per_window[:, :1]).all(1).float().mean()
    if code_components:
        assert one_kind >= 0.95 and loaded.code.k == 2
    else:
        assert one_kind <= 0.6 and loaded.code_denoiser is None


def test_the_code_flow_generates_the_kind_of_network_its_target_accuracy_names(tmp_path):
    """denoiser.code.model=flow: a zoo of two kinds of network, +3v scoring 70% and -3v scoring 50%;
    aimed at 70% the generated networks are of the first kind, aimed at 50% of the second (saved
    and loaded alike)."""
    spec, pattern, kinds, vectors = two_kinds_zoo()
    accuracy = torch.where(kinds > 0, 70.0, 50.0).double()
    cfg = compose_config(
        [
            "generator=token",
            "sampler=ddim",
            "sampler.steps=10",
            "ae.token_size=16",
            "ae.code_components=2",
            "ae.hidden=[32]",
            "ae.optim.steps=20",
            "ae.optim.warmup_steps=2",
            "denoiser.window=2",
            "denoiser.width=16",
            "denoiser.depth=1",
            "denoiser.code.model=flow",
            "denoiser.code.width=64",
            "denoiser.code.depth=2",
            "denoiser.code.optim.steps=1500",
            "denoiser.code.steps=20",
            "diffusion.optim.steps=20",
            "diffusion.optim.warmup_steps=2",
            "generate.target_quantile=1.0",
            f"paths.output_dir={tmp_path}",
        ]
    )
    assert TokenGenerator.conditioned(cfg)
    trained, loaded = trained_and_loaded(ParamZoo(vectors, accuracy, spec, {}), cfg, tmp_path)
    for target, kind in ((70.0, 1.0), (50.0, -1.0)):
        aim = Conditioning(target, 1.0)
        sampled = loaded.sample(40, cfg.sampler, 0, aim)
        assert torch.allclose(sampled, trained.sample(40, cfg.sampler, 0, aim), atol=1e-5)
        share = ((sampled * pattern).mean(1).sign() == kind).float().mean()
        assert share >= 0.9, (target, float(share))
