"""The checks of the evaluation's settings (evaluate.*) that a schema cannot express."""

from __future__ import annotations

from omegaconf import DictConfig

from .require import require
from .task_schema import FamilyName


def validate_evaluate(cfg: DictConfig) -> None:
    """The evaluation's chunks and recalibration; the one-task baselines and bootstrap."""
    require(
        cfg.evaluate.chunk_size >= 1,
        "evaluate.chunk_size",
        cfg.evaluate.chunk_size,
        "must be >= 1 (models per evaluation chunk)",
    )
    require(
        cfg.evaluate.recalibrate_batches >= 0,
        "evaluate.recalibrate_batches",
        cfg.evaluate.recalibrate_batches,
        "must be >= 0 (0: no BatchNorm recalibration)",
    )
    if FamilyName(cfg.task.family.name) is FamilyName.none:  # many tasks: scored by pdiff.heldout
        validate_baselines(cfg.evaluate, cfg.task.param.k)


def validate_baselines(evaluate, k: int) -> None:
    """The one-task evaluation's baselines and bootstrap (a zoo of many tasks never reads them)."""
    baselines = evaluate.baselines
    scales = list(baselines.noise_scales)
    require(
        len(set(scales)) >= 2 and len(set(scales)) == len(scales) and all(s > 0 for s in scales),
        "evaluate.baselines.noise_scales",
        scales,
        "needs at least 2 distinct scales, each > 0 (the noise frontier is a curve)",
    )
    require(
        baselines.models_per_scale >= 1,
        "evaluate.baselines.models_per_scale",
        baselines.models_per_scale,
        "must be >= 1",
    )
    require(
        2 <= baselines.average_of <= k,
        "evaluate.baselines.average_of",
        baselines.average_of,
        f"must be in [2, task.param.k={k}] (originals averaged per model)",
    )
    fractions = list(baselines.selected_fractions)
    require(
        all(0.0 < q <= 1.0 for q in fractions) and len(set(fractions)) == len(fractions),
        "evaluate.baselines.selected_fractions",
        fractions,
        "must be distinct fractions in (0, 1]",
    )
    require(
        0.0 < baselines.selected_noise_fraction <= 1.0,
        "evaluate.baselines.selected_noise_fraction",
        baselines.selected_noise_fraction,
        "must be in (0, 1]",
    )
    bootstrap = evaluate.bootstrap
    require(
        bootstrap.resamples >= 100,
        "evaluate.bootstrap.resamples",
        bootstrap.resamples,
        "must be >= 100 (the interval's ends are percentiles of the resamples)",
    )
    require(
        0.5 <= bootstrap.confidence < 1.0,
        "evaluate.bootstrap.confidence",
        bootstrap.confidence,
        "must be in [0.5, 1)",
    )
