"""The verdict's guards, fed adversarial populations on a real zoo of linear classifiers (SGD
checkpoints)."""

import pytest
import torch
from torch import nn

from pdiff.config import BaselinesConfig, FrontierSearch
from pdiff.evaluation.baseline_populations import point_baselines, selection_order
from pdiff.evaluation.intervals import bootstrap_accuracies
from pdiff.evaluation.memorization import evaluate_populations, memorization_normalizer
from pdiff.evaluation.noise_frontier import NoiseFrontier, search_grid
from pdiff.evaluation.similarity import Population, max_iou
from pdiff.evaluation.verdict import (
    BEATS,
    LOSES,
    TIES,
    compute_verdict,
    envelope_at,
    verdict_line,
    verdict_sentences,
)
from pdiff.evaluation.zoo_check import zoo_check
from pdiff.zoo.params import select_parameters

FEATURES, CLASSES = 12, 5
BASELINES = BaselinesConfig(noise_scales=[0.01, 0.03, 0.1, 0.3, 1.0], models_per_scale=20)


def _samples(
    n: int, generator: torch.Generator, centres: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    return centres[y] + 1.6 * torch.randn(n, FEATURES, generator=generator), y


class LinearZoo:
    """K = 60 checkpoints of 3 SGD runs of a linear classifier, their validation accuracies, a test
    set."""

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        centres = torch.randn(CLASSES, FEATURES, generator=generator)
        (x_train, y_train), (x_val, y_val) = (_samples(n, generator, centres) for n in (2000, 3000))
        self.x_test, self.y_test = _samples(10000, generator, centres)
        model = nn.Linear(FEATURES, CLASSES)
        self.spec = select_parameters(model, ["*"])
        checkpoints = []
        for run in range(3):
            torch.manual_seed(run)
            model.reset_parameters()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
            for step in range(250):
                rows = torch.randint(0, len(x_train), (16,), generator=generator)
                loss = nn.functional.cross_entropy(model(x_train[rows]), y_train[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step >= 50 and step % 10 == 0:
                    checkpoints.append(
                        torch.cat([p.detach().flatten() for p in model.parameters()])
                    )
        self.vectors = torch.stack(checkpoints)
        self.val_accuracy = (self._predict(self.vectors, x_val) == y_val).double().mean(1) * 100
        self.normalizer = memorization_normalizer(self.spec, self.vectors)

    def _predict(self, vectors: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        params = self.spec.unflatten(vectors.float())
        return torch.baddbmm(
            params["bias"][:, None],
            x.expand(len(vectors), -1, -1),
            params["weight"].transpose(1, 2),
        ).argmax(-1)

    def predictions(
        self, generated: torch.Tensor, baselines: BaselinesConfig = BASELINES
    ) -> tuple[dict, dict]:
        """({"resampled": every population's bootstrap accuracies, "acc:originals": their test
        accuracies}, the memorisation table)."""
        predictions, table = evaluate_populations(
            lambda v: self._predict(v, self.x_test),
            self.vectors,
            self.val_accuracy,
            generated,
            self.normalizer,
            self.y_test,
            0,
            baselines,
        )
        correct = {
            name: p == self.y_test
            for name, p in predictions.items()
            if ":" not in name and name != "y_test"
        }
        accuracy = correct["originals"].double().mean(1) * 100
        return {
            "resampled": bootstrap_accuracies(correct, 300, 0),
            "acc:originals": accuracy,
        }, table

    def verdict(
        self, generated: torch.Tensor, baselines: BaselinesConfig = BASELINES
    ) -> tuple[dict, dict]:
        predictions, table = self.predictions(generated, baselines)
        resampled = predictions["resampled"]
        return compute_verdict(table, resampled, point_baselines(baselines), 0.95), table

    def top(self, fraction: float) -> torch.Tensor:
        return self.vectors[
            selection_order(self.val_accuracy)[: round(fraction * len(self.vectors))]
        ]

    def noisy(self, vectors: torch.Tensor, scale: float, n: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        z = self.normalizer.normalize(vectors)
        pick = torch.randint(0, len(z), (n,), generator=generator)
        return self.normalizer.denormalize(
            z[pick] + scale * torch.randn(n, z.shape[1], generator=generator)
        )


@pytest.fixture(scope="module")
def zoo() -> LinearZoo:
    return LinearZoo()


def test_the_zoo_differs_enough_for_the_test(zoo):
    assert float(zoo.val_accuracy.max() - zoo.val_accuracy.min()) > 1.0


def test_exact_copies_of_the_top_tenth_tie_with_the_selection_controls(zoo):
    verdict, table = zoo.verdict(zoo.top(0.1).repeat(5, 1))
    assert table["generated"]["max_iou_mean"] == 1.0  # a copy has the errors of its original
    assert (
        verdict["selected_10pct"]["status"] == TIES
        and verdict["selected_10pct"]["acc_margin"] == 0.0
    )
    assert verdict["selected_10pct"]["low"] <= 0.0 <= verdict["selected_10pct"]["high"]
    assert verdict["selected_noise"]["status"] != BEATS
    assert not verdict["beats_all"]


def test_top_copies_with_noise_tuned_to_lower_their_similarity_do_not_beat_the_selected_noise_frontier(
    zoo,
):
    originals_similarity = None
    for scale in (
        0.05,
        0.1,
        0.2,
        0.4,
    ):  # the noise that brings them down to the selected originals' similarity
        generated = zoo.noisy(zoo.top(0.1), scale, 100, seed=7)
        verdict, table = zoo.verdict(generated)
        originals_similarity = table["selected_10pct"]["max_iou_mean"]
        if table["generated"]["max_iou_mean"] <= originals_similarity:
            break
    assert table["generated"]["max_iou_mean"] <= originals_similarity
    assert verdict["noise"]["status"] == BEATS  # they are better than noise around any original ...
    assert (
        verdict["selected_noise"]["status"] != BEATS
    )  # ... but not than noise around the best ones
    assert not verdict["selected_noise"]["outside_frontier"]
    assert not verdict["beats_all"]


def test_the_zoo_mean_repeated_ties_with_the_average(zoo):
    verdict, _ = zoo.verdict(zoo.vectors.mean(0, keepdim=True).repeat(50, 1))
    assert verdict["average"]["status"] == TIES
    assert (
        verdict["average"]["low"] == verdict["average"]["high"] == 0.0
    )  # the same model on the same samples
    assert not verdict["beats_all"]


def test_pure_noise_loses_and_never_wins_the_frontier(zoo):
    generated = 3.0 * torch.randn(50, zoo.spec.dim, generator=torch.Generator().manual_seed(3))
    verdict, table = zoo.verdict(generated)
    assert verdict["noise"]["status"] != BEATS and verdict["selected_noise"]["status"] != BEATS
    assert verdict["gaussian"]["status"] == LOSES and verdict["selected_top1"]["status"] == LOSES
    assert not verdict["beats_all"]


def test_a_frontier_is_extended_to_cover_the_generated_similarity(zoo):
    originals = Population(
        "originals",
        zoo.vectors,
        zoo._predict(zoo.vectors, zoo.x_test),
        copy_of=torch.arange(len(zoo.vectors)),
    )
    measured = []

    def measure(population: Population) -> tuple[float, float]:
        population.predictions = zoo._predict(population.vectors, zoo.x_test)
        measured.append(population.name)
        accuracy = float((population.predictions == zoo.y_test).double().mean() * 100)
        return float(max_iou(population, originals, zoo.y_test).mean()), accuracy

    frontier = NoiseFrontier("noise_", zoo.vectors, zoo.normalizer, 0, 20, measure)
    search_grid(frontier, [0.3, 1.0], 0.5, 0.995)
    assert set(measured[:3]) == {"noise_0.3", "noise_1", "noise_matched_0.5"} and measured[3:] == [
        "noise_0.1",
        "noise_0.0333",
        "noise_0.0111",
        "noise_0.0037",
    ]
    points = frontier.points
    assert points["noise_0.0037"][0] > points["noise_0.3"][0]  # smaller scales, more similar


@pytest.mark.parametrize("scale", [0.02, 0.1, 0.3])
def test_the_bisection_predicts_fewer_scales_and_gives_the_grids_verdict(zoo, scale):
    generated = zoo.noisy(zoo.vectors, scale, 60, seed=5)
    searches = {}
    for search in FrontierSearch:  # the default ten scales
        baselines = BaselinesConfig(models_per_scale=20, frontier=search)
        verdict, table = zoo.verdict(generated, baselines)
        noise = {name for name in table if name.startswith("noise_")}
        searches[search] = verdict, table, noise
    (grid, grid_table, grid_noise), (bisected, bisected_table, bisected_noise) = (
        searches[FrontierSearch.grid],
        searches[FrontierSearch.bisection],
    )
    assert bisected_noise < grid_noise  # a strict subset: fewer populations predicted ...
    for name in bisected_noise:  # ... each of them the grid's own population
        assert bisected_table[name] == grid_table[name]
    for family in grid["families"]:
        assert bisected[family]["status"] == grid[family]["status"]
        assert abs(bisected[family]["acc_margin"] - grid[family]["acc_margin"]) <= 0.1  # the bar


def test_the_bisection_reads_the_zoo_check_as_the_grid_does(zoo):
    checks = {}
    for search in FrontierSearch:
        baselines = BaselinesConfig(**{**BASELINES.__dict__, "frontier": search})
        predictions, table = zoo.predictions(zoo.noisy(zoo.vectors, 0.3, 40, seed=2), baselines)
        report = {
            "memorization": table,
            "original": {"std": float(predictions["acc:originals"].std())},
            "verdict": {"confidence": 0.95},
        }
        checks[search] = zoo_check(report, predictions["resampled"], BASELINES.noise_scales)
    assert checks[FrontierSearch.grid] == checks[FrontierSearch.bisection]


def test_intervals_and_statuses_are_reported_for_every_family(zoo):
    verdict, table = zoo.verdict(zoo.noisy(zoo.vectors, 0.05, 60, seed=9))
    assert set(verdict["families"]) == {"noise", "selected_noise", *point_baselines(BASELINES)}
    assert {
        "selected_top1",
        "selected_5pct",
        "selected_10pct",
        "selected_25pct",
        "selected_average16",
    } <= set(verdict["families"])
    for family in verdict["families"]:
        entry = verdict[family]
        assert entry["status"] in (BEATS, TIES, LOSES) and entry["low"] <= entry["high"]
        assert entry["status"] != BEATS or entry["low"] > 0
    sentences = verdict_sentences(verdict, table)
    assert len(sentences) == len(verdict["families"]) + 1 and "95% interval" in sentences[0]
    assert verdict_line(verdict).startswith("noise ")


def test_the_average_families_follow_average_of(zoo):
    baselines = BaselinesConfig(noise_scales=[0.03, 0.3], models_per_scale=10, average_of=4)
    verdict, table = zoo.verdict(zoo.noisy(zoo.vectors, 0.05, 20, seed=5), baselines)
    assert {"average4", "selected_average4"} <= set(verdict["families"]) & set(table)
    assert not {"average16", "selected_average16"} & (set(verdict["families"]) | set(table))
    assert verdict["selected_average4"]["acc"] == table["selected_average4"]["acc_mean"]
    assert any(
        sentence.startswith("Generated") and " average4 (" in sentence
        for sentence in verdict_sentences(verdict, table)
    )


def test_selected_copies_leave_out_their_own_original(zoo):
    _, table = zoo.verdict(zoo.vectors[:5])
    assert table["selected_top1"]["max_iou_mean"] < 1.0 and table["selected_top1"]["nn_l2_mean"] > 0


def test_equal_similarities_count_with_the_best_of_them():
    accuracies = torch.tensor([70.0, 71.0, 74.0, 75.0], dtype=torch.float64)
    at, outside = envelope_at([0.4, 0.5, 0.5, 0.6], accuracies, 0.5)
    assert float(at) == 74.0 and not outside
    at, _ = envelope_at([0.4, 0.5, 0.5, 0.6], accuracies, 0.45)  # halfway to the best point at 0.5
    assert float(at) == pytest.approx(72.0)
    assert (
        envelope_at([0.4, 0.6], accuracies[:2], 0.7)[1]
        and envelope_at([0.4, 0.6], accuracies[:2], 0.3)[1]
    )


def test_a_similarity_beyond_the_frontier_is_a_tie_however_accurate():
    def row(acc: float, similarity: float) -> dict:
        return {"n": 10, "acc_mean": acc, "max_iou_mean": similarity, "novel_fraction": 0.0}

    table = {
        "generated": row(90.0, 0.99),
        "originals_nn_l2_median": 1.0,
        "originals": row(80.0, 0.9),
    }
    resampled = {"generated": torch.full((200,), 90.0, dtype=torch.float64)}
    for prefix in ("noise_", "selected_noise_"):
        for similarity, acc in ((0.5, 60.0), (0.7, 75.0), (0.9, 80.0)):
            name = f"{prefix}{similarity}"
            table[name], resampled[name] = (
                row(acc, similarity),
                torch.full((200,), acc, dtype=torch.float64),
            )
    verdict = compute_verdict(table, resampled, (), 0.95)
    for family in ("noise", "selected_noise"):
        assert verdict[family]["outside_frontier"] and verdict[family]["low"] == pytest.approx(10.0)
        assert (
            verdict[family]["status"] == TIES
        )  # 10 points above the frontier's end, but beyond its reach
    inside = compute_verdict({**table, "generated": row(90.0, 0.8)}, resampled, (), 0.95)
    assert inside["noise"]["status"] == BEATS and inside["noise"]["frontier_acc"] == pytest.approx(
        77.5
    )
