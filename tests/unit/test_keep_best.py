"""Keep the best of N by validation (generated against trained), the trained pool, and the cost per
model."""

import pytest
import torch

from pdiff.data.tasknets import mlp_bn
from pdiff.evaluation.costs import cost_per_model
from pdiff.evaluation.keep_best import keep_best, trained_pool
from pdiff.zoo.params import select_parameters
from pdiff.zoo.store import ParamZoo


def _pools(n_test: int = 4000):
    """Trained: 4 models at 60-75% test; generated: 6 models at 78-81%, the best by validation at
    80%."""
    generator = torch.Generator().manual_seed(0)
    u = torch.rand(10, n_test, generator=generator)
    rates = torch.tensor([0.60, 0.75, 0.70, 0.65, 0.78, 0.79, 0.80, 0.78, 0.81, 0.79])[:, None]
    correct = u < rates
    val = rates[:, 0] * 100 + torch.tensor([0, 1, 0, 0, 0, 0, 0, 0, 0, 0.0])
    return (
        {"trained": correct[:4], "generated": correct[4:]},
        {"trained": val[:4], "generated": val[4:]},
    )


def test_kept_models_are_the_best_by_validation_at_equal_n():
    correct, val = _pools()
    picked = keep_best(correct, val, 400, 0, 0.95)
    assert picked["n"] == 4  # the smaller pool: the first 4 generated models
    assert picked["trained"]["kept_index"] == 1 and picked["generated"]["kept_index"] == 2
    assert picked["trained"]["kept_test"] == pytest.approx(
        float(correct["trained"][1].double().mean() * 100)
    )
    assert picked["generated"]["kept_test"] == pytest.approx(
        float(correct["generated"][2].double().mean() * 100)
    )
    assert picked["trained"]["mean"] == pytest.approx(
        float(correct["trained"].double().mean() * 100)
    )
    assert picked["margin"] == pytest.approx(
        picked["generated"]["kept_test"] - picked["trained"]["kept_test"]
    )
    low, high = picked["margin_interval"]
    assert 0 < low < picked["margin"] < high  # any generated model beats the trained ones: resolved
    spread, spread_val = dict(correct), dict(val)
    spread["generated"] = torch.cat(
        [correct["trained"][:1], correct["generated"][2:3]]
    )  # 60% or 80%
    spread_val["generated"] = torch.tensor([60.0, 80.0])
    low, high = keep_best(spread, spread_val, 400, 0, 0.95)["margin_interval"]
    assert low < 0 < high  # the kept model depends on which 2 models were generated: not resolved
    for pool in ("trained", "generated"):
        low, high = picked[pool]["kept_test_interval"]
        assert low <= picked[pool]["kept_test"] <= high + 1e-9
        assert (
            picked[pool]["mean_interval"][0]
            < picked[pool]["mean"]
            < picked[pool]["mean_interval"][1]
        )


def test_keep_best_is_deterministic_and_its_interval_widens_with_fewer_test_samples():
    correct, val = _pools()
    assert keep_best(correct, val, 200, 3, 0.95) == keep_best(correct, val, 200, 3, 0.95)
    few, few_val = _pools(200)
    wide = keep_best(few, few_val, 400, 0, 0.95)["margin_interval"]
    narrow = keep_best(correct, val, 400, 0, 0.95)["margin_interval"]
    assert wide[1] - wide[0] > 1.5 * (narrow[1] - narrow[0])


def test_trained_pool_is_each_runs_last_checkpoint_or_every_checkpoint_of_one_run():
    assert trained_pool([0, 0, 0, 1, 1, 2, 2, 2]).tolist() == [2, 4, 7]
    assert trained_pool([0, 0, 0]).tolist() == [0, 1, 2]


def test_cost_per_model_spreads_collection_and_generator_time():
    timings = {
        "collect_base": 10.0,
        "collect_run_0": 2.0,
        "collect_run_1": 12.0,
        "collect": 24.5,
        "train_flow": 50.0,
        "generate": 2.0,
        "recalibrate_per_model": 0.25,
        "evaluate": 99.0,
    }
    cost = cost_per_model(timings, runs=2, k=8, n_generated=100)
    assert (
        cost["sgd_per_run_s"] == 12.0 and cost["sgd_per_checkpoint_s"] == 3.0
    )  # (10 + 2 + 12) / 2 and / 8
    assert cost["generated_amortised_s"] == pytest.approx(52 / 100 + 0.25)
    assert cost["generated_marginal_s"] == pytest.approx(2 / 100 + 0.25)
    assert (
        cost_per_model({"collect_run_0": 1.0}, runs=2, k=8, n_generated=10)["sgd_per_run_s"] is None
    )


def test_zoo_best_by_validation_keeps_the_top_fraction_in_zoo_order():
    spec = select_parameters(mlp_bn((3,), 2, [4]), ["bn1"])
    accuracy = torch.tensor(
        [50.0, 90.0, 70.0, 80.0, 60.0, 85.0, 40.0, 30.0, 20.0, 10.0], dtype=torch.float64
    )
    zoo = ParamZoo(torch.arange(10.0)[:, None].repeat(1, spec.dim), accuracy, spec, {"k": 10})
    best = zoo.best_by_validation(0.3)
    assert (
        best.k == 3
        and best.vectors[:, 0].tolist() == [1.0, 3.0, 5.0]
        and best.meta["trained_on"] == [1, 3, 5]
    )
    assert zoo.best_by_validation(1.0) is zoo and zoo.best_by_validation(0.01).k == 2
