import pytest
import torch

from pdiff.config import BaselinesConfig
from pdiff.data.tasknets import digits_cnn
from pdiff.errors import GeneratedNotFinite
from pdiff.evaluation import similarity
from pdiff.evaluation.baseline_populations import (
    averaged_members,
    matched_noise_scale,
    noise_population,
    point_baselines,
    point_populations,
)
from pdiff.evaluation.memorization import (
    GENERATED_FILE,
    MemorizationTable,
    evaluate_populations,
    memorization_normalizer,
)
from pdiff.evaluation.similarity import NearestOriginals, Population, error_iou, mean_pairwise_iou
from pdiff.zoo.params import select_parameters


def test_error_iou_matches_a_loop():
    torch.manual_seed(0)
    a, b = torch.rand(5, 40) < 0.3, torch.rand(4, 40) < 0.3
    b[0] = False
    a[0] = False
    iou = error_iou(a, b)
    for i in range(5):
        for j in range(4):
            inter, union = (a[i] & b[j]).sum(), (a[i] | b[j]).sum()
            expected = 1.0 if union == 0 else float(inter) / float(union)
            assert abs(float(iou[i, j]) - expected) < 1e-12
    assert mean_pairwise_iou(a[:1]) is None


def test_nearest_original_excludes_self_for_originals():
    originals = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    l2, cosine, index = NearestOriginals(originals)(originals, exclude=torch.arange(3))
    assert index.tolist() == [2, 2, 0] and torch.allclose(
        l2, torch.tensor([1.0, 18**0.5, 1.0], dtype=torch.float64)
    )
    l2, _, index = NearestOriginals(originals)(torch.tensor([[3.0, 4.1]]))
    assert index.tolist() == [1] and abs(float(l2[0]) - 0.1) < 1e-6
    assert abs(matched_noise_scale(4.0, 16) - 1.0) < 1e-12


def test_the_nearest_original_is_measured_exactly_whatever_the_float32_ranking():
    generator = torch.Generator().manual_seed(0)
    centre = 100.0 * torch.randn(50_000, generator=generator)  # large norms: float32 products err
    originals = centre + torch.randn(30, 50_000, generator=generator)
    queries = torch.cat(
        [
            originals[:5] + 1e-3 * torch.randn(5, 50_000, generator=generator),  # near copies
            centre + torch.randn(5, 50_000, generator=generator),  # new, at the originals' spread
        ]
    )
    l2, cosine, index = NearestOriginals(originals)(queries)
    reference = (queries.double()[:, None] - originals.double()[None]).pow(2).sum(-1).sqrt()
    assert torch.equal(index, reference.argmin(1))
    assert torch.allclose(l2, reference.min(1).values, rtol=1e-9, atol=1e-9)
    nearest = originals.double()[index]
    expected = 1 - (queries.double() * nearest).sum(1) / (
        queries.double().norm(dim=1) * nearest.norm(dim=1)
    )
    assert torch.allclose(cosine, expected, atol=1e-10)


def test_nearest_originals_normalise_block_by_block_as_a_normalised_copy_would(monkeypatch):
    monkeypatch.setattr(similarity, "COLUMN_BLOCK", 64)  # many blocks, one ending mid-tensor
    torch.manual_seed(0)
    spec = select_parameters(digits_cnn((1, 8, 8), 10, 8), ["bn4", "fc"])
    originals = 3.0 + 0.5 * torch.randn(12, spec.dim)
    queries = 3.0 + 0.5 * torch.randn(4, spec.dim)
    normalizer = memorization_normalizer(spec, originals)
    copied = NearestOriginals(normalizer.normalize(originals))(normalizer.normalize(queries))
    streamed = NearestOriginals(originals, normalizer)(queries)
    assert spec.dim > 3 * similarity.COLUMN_BLOCK
    for expected, got in zip(copied, streamed, strict=True):
        assert torch.allclose(expected, got, rtol=1e-6, atol=1e-9)
    assert not torch.equal(NearestOriginals(originals)(queries)[0], streamed[0])


def test_table_copies_are_not_novel_and_noise_is():
    torch.manual_seed(0)
    spec = select_parameters(digits_cnn((1, 8, 8), 10, 8), ["bn4"])
    zoo = torch.randn(30, spec.dim)
    normalizer = memorization_normalizer(spec, zoo)
    y = torch.randint(0, 10, (50,))

    def predictions(vectors):  # a stand-in network: predicted class from the vector's sign pattern
        return ((vectors[:, :50] > 0).long() * 3 + y) % 10

    calls = []

    def predict(vectors):
        calls.append(len(vectors))
        return predictions(vectors)

    memorization = MemorizationTable(predict, zoo, normalizer, y)
    memorization.add(Population("generated", zoo[:10].clone()))
    for baseline in (
        noise_population("noise_0.001", zoo, normalizer, 0.001, 7, 0),
        noise_population("noise_matched_2", zoo, normalizer, 2.0, 10, 0),
        *point_populations(zoo, torch.linspace(60, 70, 30), normalizer, 10, 0, BaselinesConfig()),
    ):
        memorization.add(baseline)
    table, per_model = memorization.table, memorization.per_model
    # the selection controls are copies of originals: they reuse the originals' predictions
    assert calls == [30, 10, 7, 10, 10, 10, 1, 10, 1]
    assert table["generated"]["novel_fraction"] == 0.0 and table["generated"]["nn_l2_mean"] < 1e-6
    assert table["generated"]["max_iou_mean"] == 1.0
    assert table["noise_0.001"]["novel_fraction"] == 0.0
    assert table["noise_matched_2"]["novel_fraction"] == 1.0
    assert table["average"]["n"] == 1 and table["noise_0.001"]["n"] == 7
    assert {"gaussian", "average16", "interpolation"} <= set(table) and table["gaussian"]["n"] == 10
    # the best originals by validation (the last ones here), exact copies that leave out their own
    # original
    assert (
        table["selected_top1"]["n"] == 1
        and table["selected_10pct"]["n"] == 3
        and table["selected_25pct"]["n"] == 8
    )
    assert (
        table["selected_top1"]["nn_l2_mean"] > 0 and table["selected_10pct"]["novel_fraction"] >= 0
    )
    assert per_model["max_iou:generated"].shape == (10,)


def test_gaussian_and_average16_baselines_are_what_they_say():
    torch.manual_seed(1)
    spec = select_parameters(digits_cnn((1, 8, 8), 10, 8), ["bn4"])
    zoo = torch.randn(40, spec.dim) * torch.linspace(0.1, 3.0, spec.dim) + torch.linspace(
        -5, 5, spec.dim
    )
    normalizer = memorization_normalizer(spec, zoo)
    cfg = BaselinesConfig(noise_scales=[0.01, 0.1], models_per_scale=3, average_of=16)
    val_accuracy = torch.arange(40.0)
    populations = {
        p.name: p.vectors for p in point_populations(zoo, val_accuracy, normalizer, 4000, 0, cfg)
    }
    gaussian = populations["gaussian"]  # per coordinate: the zoo's mean and std
    assert torch.allclose(gaussian.mean(0), zoo.mean(0), atol=0.15) and torch.allclose(
        gaussian.std(0), zoo.std(0), rtol=0.08
    )
    # each average16 model is the mean of 16 distinct originals: solve for its weights over the zoo
    weights = torch.linalg.lstsq(zoo.double().T, populations["average16"][:5].double().T).solution.T
    assert torch.allclose(
        weights.sort(1, descending=True).values[:, :16],
        torch.full((5, 16), 1 / 16.0, dtype=torch.float64),
        atol=1e-6,
    )
    assert weights.sort(1, descending=True).values[:, 16:].abs().max() < 1e-6
    assert set(populations) >= {"average", "interpolation", "selected_top1", "selected_5pct"}
    assert torch.equal(populations["selected_top1"], zoo[39:])
    assert torch.equal(populations["selected_5pct"], zoo[[39, 38]])
    assert torch.allclose(populations["selected_average16"], zoo[24:].mean(0, keepdim=True))


def _weights_over_zoo(zoo: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """[M, K] weights that make each of the [M, D] vectors from the [K, D] zoo (D > K: the solution
    is exact)."""
    return torch.linalg.lstsq(zoo.double().T, vectors.double().T).solution.T


def test_average_baselines_are_named_after_average_of_and_average_that_many():
    torch.manual_seed(2)
    spec = select_parameters(digits_cnn((1, 8, 8), 10, 8), ["bn4"])
    zoo = torch.randn(12, spec.dim) * torch.linspace(0.5, 2.0, spec.dim)
    normalizer = memorization_normalizer(spec, zoo)
    cfg = BaselinesConfig(noise_scales=[0.01, 0.1], models_per_scale=3, average_of=4)
    populations = {
        p.name: p.vectors
        for p in point_populations(zoo, torch.arange(12.0), normalizer, 20, 0, cfg)
    }
    assert {"average4", "selected_average4"} <= set(populations) and not {
        "average16",
        "selected_average16",
    } & set(populations)
    assert {"average4", "selected_average4"} <= set(point_baselines(cfg)) and averaged_members(
        populations
    ) == 4
    weights = _weights_over_zoo(zoo, populations["average4"]).sort(1, descending=True).values
    assert torch.allclose(weights[:, :4], torch.full((20, 4), 0.25, dtype=torch.float64), atol=1e-6)
    assert (
        weights[:, 4:].abs().max() < 1e-6
    )  # exactly 4 distinct originals each, with equal weights
    assert torch.allclose(
        populations["selected_average4"], zoo[8:].mean(0, keepdim=True)
    )  # the 4 best


def test_non_finite_generated_vectors_are_refused_before_any_prediction():
    spec = select_parameters(digits_cnn((1, 8, 8), 10, 8), ["bn4"])
    zoo, generated = torch.randn(6, spec.dim), torch.randn(5, spec.dim)
    generated[1, 3], generated[4, 0] = float("nan"), float("inf")
    calls = []

    def predict(vectors):
        calls.append(len(vectors))
        return torch.zeros(len(vectors), 8, dtype=torch.long)

    with pytest.raises(
        GeneratedNotFinite,
        match=rf"{GENERATED_FILE} holds 2 of 5 generated parameter vectors "
        r"with non-finite values \(NaN or inf\).*Retrain the generator",
    ):
        evaluate_populations(
            predict,
            zoo,
            torch.arange(6.0),
            generated,
            memorization_normalizer(spec, zoo),
            torch.zeros(8, dtype=torch.long),
            0,
            BaselinesConfig(),
        )
    assert calls == []  # refused before the first prediction
    evaluate_populations(
        predict,
        zoo,
        torch.arange(6.0),
        generated.nan_to_num(posinf=0.0),
        memorization_normalizer(spec, zoo),
        torch.zeros(8, dtype=torch.long),
        0,
        BaselinesConfig(average_of=4, models_per_scale=2),
    )
    assert calls  # finite vectors pass the guard


def test_a_noise_population_draws_each_model_from_its_own_stream():
    spec = select_parameters(digits_cnn((1, 8, 8), 10, 8), ["bn4"])
    zoo = torch.randn(6, spec.dim)
    normalizer = memorization_normalizer(spec, zoo)
    five = noise_population("noise_0.1", zoo, normalizer, 0.1, 5, seed=3).vectors
    two = noise_population("noise_0.1", zoo, normalizer, 0.1, 2, seed=3).vectors
    other = noise_population("noise_0.3", zoo, normalizer, 0.1, 2, seed=3).vectors
    assert torch.equal(five[:2], two)  # the first models do not depend on how many are drawn
    assert not torch.equal(two, other)  # another population, other draws
    assert not torch.equal(two, noise_population("noise_0.1", zoo, normalizer, 0.1, 2, 4).vectors)
