"""Pick models as a user would: "generate N, keep the best by validation" against "train N, keep the
best by validation", at equal N, with paired-bootstrap intervals.

Each resample draws the test samples once (both pools are scored on the same draw) and, per pool, N
models with replacement; the kept model is the drawn one with the highest validation accuracy, and
its test accuracy on the resampled test set is what a user who kept it would get.
"""

from __future__ import annotations

import torch

from pdiff.evaluation.intervals import RESAMPLES_PER_CHUNK, draw_counts, percentile_interval
from pdiff.seeds import Purpose, generator_for

POOLS = ("trained", "generated")


def trained_pool(checkpoint_run: list[int]) -> torch.Tensor:
    """Indices of the models a user trains with SGD: each independent run's last checkpoint (every
    checkpoint when the zoo is one run)."""
    runs = torch.tensor(checkpoint_run)
    if runs.unique().numel() < 2:
        return torch.arange(len(runs))
    return torch.tensor([int((runs == run).nonzero().max()) for run in runs.unique().tolist()])


def keep_best(
    correct: dict[str, torch.Tensor],
    val_accuracy: dict[str, torch.Tensor],
    resamples: int,
    seed: int,
    confidence: float,
) -> dict:
    """For the pools "trained" and "generated" ({pool: [M, N_test] booleans}, {pool: [M] validation
    %}), at N = the smaller pool's size: each pool's mean test accuracy, and the validation and test
    accuracy of its best model by validation (the first N generated models; every trained one), each
    test figure with its interval, and the margin generated - trained of the kept models with its
    interval."""
    n = min(len(correct[pool]) for pool in POOLS)
    correct = {pool: correct[pool][:n] for pool in POOLS}
    val_accuracy = {pool: val_accuracy[pool][:n] for pool in POOLS}
    n_test = correct["trained"].shape[1]
    generator = generator_for(seed, Purpose.keep_best)
    draws = {pool: {"mean": [], "best": []} for pool in POOLS}
    for start in range(0, resamples, RESAMPLES_PER_CHUNK):
        size = min(RESAMPLES_PER_CHUNK, resamples - start)
        counts = draw_counts(n_test, size, generator)  # [size, N_test]
        columns = torch.arange(size)
        for pool in POOLS:
            per_model = correct[pool].float() @ counts.T / n_test * 100  # [M, size]
            drawn = torch.randint(0, len(per_model), (size, n), generator=generator)  # [size, n]
            kept = drawn.gather(1, val_accuracy[pool][drawn].argmax(1, keepdim=True))[:, 0]
            draws[pool]["mean"].append(per_model[drawn, columns[:, None]].mean(1).double())
            draws[pool]["best"].append(per_model[kept, columns].double())
    result: dict = {"n": n, "confidence": confidence}
    best = {pool: torch.cat(draws[pool]["best"]) for pool in POOLS}
    for pool in POOLS:
        acc = correct[pool].double().mean(1) * 100
        kept = int(val_accuracy[pool].argmax())
        result[pool] = {
            "mean": round(float(acc.mean()), 4),
            "mean_interval": _rounded(torch.cat(draws[pool]["mean"]), confidence),
            "kept_index": kept,
            "kept_val": round(float(val_accuracy[pool][kept]), 4),
            "kept_test": round(float(acc[kept]), 4),
            "kept_test_interval": _rounded(best[pool], confidence),
        }
    margin = best["generated"] - best["trained"]
    result["margin"] = round(result["generated"]["kept_test"] - result["trained"]["kept_test"], 4)
    result["margin_interval"] = _rounded(margin, confidence)
    return result


def _rounded(samples: torch.Tensor, confidence: float) -> list[float]:
    return [round(value, 4) for value in percentile_interval(samples, confidence)]
