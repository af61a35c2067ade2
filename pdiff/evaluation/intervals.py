"""Paired bootstrap of population accuracies: the uncertainty of every margin the verdict reports.

Each resample draws the test samples once, with replacement, and every population is scored on those
same samples (paired: the test set's own difficulty cancels in a difference); each population's
models are drawn with replacement on their own. A margin's interval is the percentile interval of
its resampled values.
"""

from __future__ import annotations

import torch

from pdiff.seeds import Purpose, generator_for

RESAMPLES_PER_CHUNK = (
    100  # resamples whose test-sample counts are held in memory at once ([chunk, N] floats)
)


def bootstrap_accuracies(
    correct: dict[str, torch.Tensor], resamples: int, seed: int
) -> dict[str, torch.Tensor]:
    """{population: [B] mean accuracy (percent) under each of B paired resamples}; `correct` holds
    [M, N] booleans (model m right on test sample n), every population on the same N test samples.

    The test samples come from one stream and each population's models from a stream keyed by its
    name, so a population's draws do not depend on which other populations there are, or in which
    order they come.
    """
    n = next(iter(correct.values())).shape[1]
    samples = generator_for(seed, Purpose.bootstrap, "test_samples")
    models = {name: generator_for(seed, Purpose.bootstrap, f"models:{name}") for name in correct}
    scored = {name: c.float() for name, c in correct.items()}
    out = {name: [] for name in correct}
    for start in range(0, resamples, RESAMPLES_PER_CHUNK):
        size = min(RESAMPLES_PER_CHUNK, resamples - start)
        counts = draw_counts(n, size, samples)  # [size, N]: how often each test sample is drawn
        for name, c in scored.items():
            per_model = (
                c @ counts.T / n
            )  # [M, size]: each model's accuracy on each resampled test set
            weights = draw_counts(len(c), size, models[name]) / len(c)  # [size, M]
            out[name].append((weights * per_model.T).sum(1).double() * 100)
    return {name: torch.cat(values) for name, values in out.items()}


def draw_counts(n: int, resamples: int, generator: torch.Generator) -> torch.Tensor:
    """[resamples, n] draw counts of n items drawn n times with replacement, per resample."""
    draws = torch.randint(0, n, (resamples, n), generator=generator)
    return torch.zeros(resamples, n).scatter_add_(1, draws, torch.ones(resamples, n))


def percentile_interval(samples: torch.Tensor, confidence: float) -> tuple[float, float]:
    """The central `confidence` interval of resampled values."""
    tail = (1.0 - confidence) / 2
    low, high = torch.quantile(
        samples.double(), torch.tensor([tail, 1.0 - tail], dtype=torch.float64)
    ).tolist()
    return low, high
