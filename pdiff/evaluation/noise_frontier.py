"""The noise frontiers: originals plus Gaussian noise at growing scales, each scale's models
predicted and measured as they are drawn.

The verdict reads a frontier at the generated models' similarity, between the two scales around it;
the zoo check reads the noise frontier's configured scales at the originals' own similarity.
evaluate.baselines.frontier chooses which scales are predicted:
- `grid`: every configured scale, the matched one, and extensions (a third of the smallest, three
  times the largest) until the frontier covers the generated similarity;
- `bisection`: only the scales those two readings need, found by a galloping bisection from the
  configured scale nearest the matched one (similarity falls as the scale grows) over the same
  candidates, then the larger
  scales until accuracy has fallen PLATEAU_DROP points (the envelope is a running maximum: on a
  plateau a less similar scale can still hold it, in a resample if not on average).
Each scale's models come from their own streams, so a scale is the same population in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from pdiff.config import FrontierSearch
from pdiff.evaluation.baseline_populations import noise_population
from pdiff.evaluation.similarity import Population
from pdiff.zoo.params import ParamNormalizer

EXTENSIONS = 4  # at most this many extra scales each way, to cover the generated similarity
EXTENSION_FACTOR = 3.0
PLATEAU_DROP = 1.0  # accuracy points below the bracket's less similar end that end the plateau


@dataclass
class NoiseFrontier:
    """One frontier's candidate scales, and the similarity of each scale predicted so far.

    `measure` predicts a population and records it (the evaluation's table), returning its
    similarity and mean accuracy; the frontier keeps no vectors."""

    prefix: str
    sources: torch.Tensor
    normalizer: ParamNormalizer
    seed: int
    count: int
    measure: Callable[[Population], tuple[float, float]]
    points: dict[str, tuple[float, float]] = field(default_factory=dict)  # similarity, accuracy

    def at(self, name: str, scale: float) -> float:
        """The similarity of the population at `scale` called `name` (drawn and predicted once)."""
        if name not in self.points:
            population = noise_population(
                name, self.sources, self.normalizer, scale, self.count, self.seed
            )
            self.points[name] = self.measure(population)
        return self.points[name][0]

    def similarities(self) -> list[float]:
        return [similarity for similarity, _ in self.points.values()]


def configured_entry(prefix: str, scale: float) -> tuple[str, float]:
    """(name, scale) of a configured scale (the grid's names: noise_0.05)."""
    return f"{prefix}{scale:g}", scale


def matched_entry(prefix: str, matched: float) -> tuple[str, float]:
    return f"{prefix}matched_{matched:.3g}", matched


def candidates(prefix: str, configured: list[float], matched: float) -> list[tuple[str, float]]:
    """(name, scale) by increasing scale: the extensions below, the configured scales with the
    matched one among them, the extensions above."""
    scales = sorted(configured)
    below = [scales[0] / EXTENSION_FACTOR**i for i in range(EXTENSIONS, 0, -1)]
    above = [scales[-1] * EXTENSION_FACTOR**i for i in range(1, EXTENSIONS + 1)]
    middle = [configured_entry(prefix, s) for s in scales] + [matched_entry(prefix, matched)]
    return (
        [(f"{prefix}{s:.3g}", s) for s in below]
        + sorted(middle, key=lambda item: item[1])
        + [(f"{prefix}{s:.3g}", s) for s in above]
    )


def search_grid(frontier: NoiseFrontier, configured: list[float], matched: float, target: float):
    """Every configured scale and the matched one, then extensions one at a time (smaller while the
    target is more similar than every scale, larger while it is less) until they cover it."""
    ladder = candidates(frontier.prefix, configured, matched)
    first = ladder.index(configured_entry(frontier.prefix, min(configured)))
    last = ladder.index(configured_entry(frontier.prefix, max(configured)))
    for name, scale in ladder[first : last + 1]:
        frontier.at(name, scale)
    frontier.at(*matched_entry(frontier.prefix, matched))
    while True:
        if target > max(frontier.similarities()) and first > 0:
            first -= 1
            frontier.at(*ladder[first])
        elif target < min(frontier.similarities()) and last < len(ladder) - 1:
            last += 1
            frontier.at(*ladder[last])
        else:
            return


def bracket(
    frontier: NoiseFrontier, ladder: list[tuple[str, float]], start: int, last: int, target: float
):
    """Predict the two adjacent scales of `ladder` whose similarities enclose `target` (or the end
    the target lies beyond), galloping out from index `start` and then bisecting; then the larger
    scales of the plateau below it, up to index `last` (where the grid's scales end) or the
    bracket."""

    def similar(index: int) -> bool:  # is scale `index` at least as similar as the target?
        return frontier.at(*ladder[index]) >= target

    step, low, high = 1, start, start
    if similar(start):  # more similar than the target: the bracket lies at larger scales
        while high < len(ladder) - 1 and similar(high):
            low, high = high, min(high + step, len(ladder) - 1)
            step *= 2
        if similar(high):
            return
    else:
        while low > 0 and not similar(low):
            high, low = low, max(low - step, 0)
            step *= 2
        if not similar(low):
            return follow_plateau(frontier, ladder, low, last)
    while high - low > 1:  # similar(low) and not similar(high)
        middle = (low + high) // 2
        low, high = (middle, high) if similar(middle) else (low, middle)
    follow_plateau(frontier, ladder, high, last)


def follow_plateau(
    frontier: NoiseFrontier, ladder: list[tuple[str, float]], index: int, last: int
) -> None:
    """Predict the scales after `index` (the matched one aside), up to index `last`, until one is
    PLATEAU_DROP points less accurate than the best so far."""
    best = frontier.points[ladder[index][0]][1]
    for name, scale in ladder[index + 1 : last + 1]:
        if name.startswith(f"{frontier.prefix}matched_") and name not in frontier.points:
            continue
        frontier.at(name, scale)
        accuracy = frontier.points[name][1]
        if accuracy <= best - PLATEAU_DROP:
            return
        best = max(best, accuracy)


def search_bisection(
    frontier: NoiseFrontier,
    configured: list[float],
    matched: float,
    target: float,
    originals_similarity: float | None,
) -> None:
    """The scales around the generated similarity among all candidates (from the configured scale
    nearest the matched one), and, with `originals_similarity`, those around it among the
    configured scales (the zoo check)."""
    ladder = candidates(frontier.prefix, configured, matched)
    nearest = min(configured, key=lambda scale: abs(math.log(scale / max(matched, 1e-12))))
    start = ladder.index(configured_entry(frontier.prefix, nearest))
    last = ladder.index(configured_entry(frontier.prefix, max(configured)))
    bracket(frontier, ladder, start, last, target)
    if originals_similarity is not None:  # from the configured scale nearest it so far
        configured_ladder = [configured_entry(frontier.prefix, s) for s in sorted(configured)]
        known = [i for i, (name, _) in enumerate(configured_ladder) if name in frontier.points]

        def gap(index: int) -> float:
            return abs(frontier.at(*configured_ladder[index]) - originals_similarity)

        start = min(known, key=gap) if known else 0
        bracket(frontier, configured_ladder, start, len(configured) - 1, originals_similarity)


def trace_frontier(
    frontier: NoiseFrontier,
    search: FrontierSearch,
    configured: list[float],
    matched: float,
    target: float,
    originals_similarity: float | None,
) -> None:
    """Predict the scales `search` asks for (originals_similarity: where the zoo check reads this
    frontier, if it does)."""
    if search is FrontierSearch.grid:
        search_grid(frontier, configured, matched, target)
    else:
        search_bisection(frontier, configured, matched, target, originals_similarity)
