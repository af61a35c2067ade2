"""The schemas of the evaluation (evaluate.*): the memorisation baselines and the bootstrap
intervals."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class FrontierSearch(Enum):
    grid = "grid"
    bisection = "bisection"


@dataclass
class BaselinesConfig:
    """The memorisation baselines of Zeng et al. (2025), drawn in the zoo's per-tensor z-scores."""

    # originals + N(0, s^2): the noise frontier of accuracy vs. similarity (p-diff's published
    # 0.001, 0.05, 0.15 included); plus the scale matching the generated models' distance
    noise_scales: list[float] = field(
        default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.15, 0.3, 0.6, 1.0]
    )
    models_per_scale: int = (
        20  # models per frontier scale, the matched one included (the others: generate.n)
    )
    average_of: int = (
        16  # originals per model of the average<m> baseline (and of selected_average<m>: the best)
    )
    # selection controls: the top 1 and the top q of the originals by validation accuracy, exact
    # copies
    selected_fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25])
    selected_noise_fraction: float = (
        0.1  # the second noise frontier perturbs the top 10% by validation
    )
    # which scales are predicted (pdiff/evaluation/noise_frontier.py): bisection, only those the
    # verdict and the zoo check read; grid, every configured one and the extensions
    frontier: FrontierSearch = FrontierSearch.bisection


@dataclass
class BootstrapConfig:
    """95% intervals of every accuracy margin: a paired bootstrap over test samples and the models
    of each population (the same resampled test samples for every population)."""

    resamples: int = 1000
    confidence: float = 0.95


class EvalSplit(Enum):
    test = "test"
    val = "val"


@dataclass
class EvaluateConfig:
    # the split every population is scored on: test (read here and nowhere else), or val, to choose
    # settings without reading the test labels (the report then says so)
    split: EvalSplit = EvalSplit.test
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    # > 0: before testing, every model's (every population's) BatchNorm running statistics are
    # re-estimated on this many batches of training data (data.eval_batch_size rows each, a fixed
    # seeded choice)
    recalibrate_batches: int = 0
    chunk_size: int = 100
    batched: bool = (
        False  # vmap the tail over chunks of models (GPU); per model is faster on CPU (measured)
    )
