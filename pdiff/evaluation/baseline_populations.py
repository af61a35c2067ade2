"""The populations the generated models are compared with: the critique's point baselines (a
Gaussian fitted to the zoo, averages, interpolations), the selection controls (the best originals by
validation accuracy) and the noise frontiers (originals plus noise at growing scales), with the
names they go by in the report."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from pdiff.evaluation.similarity import COLUMN_BLOCK, Population
from pdiff.seeds import Purpose, generator_for
from pdiff.zoo.params import ParamNormalizer

FRONTIERS = {
    "noise": "noise_",
    "selected_noise": "selected_noise_",
}  # family: prefix of its populations


def selection_order(val_accuracy: torch.Tensor) -> torch.Tensor:
    """Original indices by decreasing validation accuracy (ties: lower index first)."""
    return torch.sort(-val_accuracy.double(), stable=True).indices


def selected_label(fraction: float) -> str:
    return f"selected_{fraction * 100:g}pct"


AVERAGE_PREFIX, SELECTED_AVERAGE_PREFIX = "average", "selected_average"


def average_labels(average_of: int) -> tuple[str, str]:
    """Names of the average of `average_of` random originals and of the average of the `average_of`
    best."""
    return f"{AVERAGE_PREFIX}{average_of}", f"{SELECTED_AVERAGE_PREFIX}{average_of}"


def averaged_members(names) -> int:
    """The `average_of` that named these populations (or verdict families): m of their
    selected_average<m>."""
    for name in names:
        if (
            name.startswith(SELECTED_AVERAGE_PREFIX)
            and name.removeprefix(SELECTED_AVERAGE_PREFIX).isdigit()
        ):
            return int(name.removeprefix(SELECTED_AVERAGE_PREFIX))
    raise ValueError(f"no {SELECTED_AVERAGE_PREFIX}<m> population among {sorted(names)}")


def point_baselines(baselines_cfg) -> tuple[str, ...]:
    """The baseline families compared as one population each (the frontiers are the others)."""
    average, selected_average = average_labels(baselines_cfg.average_of)
    return (
        "gaussian",
        average,
        "average",
        "interpolation",
        "selected_top1",
        *(selected_label(q) for q in baselines_cfg.selected_fractions),
        selected_average,
    )


def point_populations(
    originals: torch.Tensor,
    val_accuracy: torch.Tensor,
    normalizer: ParamNormalizer,
    n: int,
    seed: int,
    baselines_cfg,
) -> Iterator[Population]:
    """The critique's point baselines (boyazeng/weight_memorization: a per-coordinate Gaussian
    fitted to the zoo, averages of m = evaluate.baselines.average_of random originals (16 as
    published), named average<m>, the average of all, random interpolations of two) and the
    selection controls: the top 1 / top-q originals by validation accuracy (exact copies), and the
    average of the m best (selected_average<m>). One at a time, each drawn from its own stream."""
    k, dim = originals.shape
    mean = normalizer.normalize(originals.mean(0))
    std = column_std(originals) / normalizer.std if k > 1 else torch.zeros(dim)
    vectors = torch.randn(n, dim, generator=population_stream(seed, "gaussian"))
    vectors.mul_(std).add_(mean).mul_(normalizer.std).add_(normalizer.mean)  # in place: D is large
    yield Population("gaussian", vectors)
    average, selected_average = average_labels(baselines_cfg.average_of)
    members = min(
        baselines_cfg.average_of, k
    )  # config validation refuses average_of > task.param.k
    picks = torch.rand(n, k, generator=population_stream(seed, average)).argsort(1)[:, :members]
    weights = torch.zeros(n, k, dtype=originals.dtype).scatter_(1, picks, 1.0 / members)
    yield Population(average, weights @ originals)
    yield Population("average", originals.mean(0, keepdim=True))
    rng = population_stream(seed, "interpolation")
    pairs = torch.randint(0, k, (n, 2), generator=rng)
    alpha = torch.rand(n, 1, generator=rng)
    yield Population(
        "interpolation", torch.lerp(originals[pairs[:, 1]], originals[pairs[:, 0]], alpha)
    )
    order = selection_order(val_accuracy)
    for name, count in (
        ("selected_top1", 1),
        *((selected_label(q), max(1, round(q * k))) for q in baselines_cfg.selected_fractions),
    ):
        yield Population(name, originals[order[:count]], copy_of=order[:count])
    yield Population(selected_average, originals[order[:members]].mean(0, keepdim=True))


def column_std(rows: torch.Tensor) -> torch.Tensor:
    """[D] standard deviation of each column of rows [K, D], COLUMN_BLOCK columns at a time."""
    std = torch.empty(rows.shape[1])
    for start in range(0, rows.shape[1], COLUMN_BLOCK):
        std[start : start + COLUMN_BLOCK] = rows[:, start : start + COLUMN_BLOCK].std(0)
    return std


def population_stream(seed: int, name: str) -> torch.Generator:
    """The draws of the baseline population `name` (of one model of it: "<name>:<i>"): its own
    stream, so that a population is the same whichever others are drawn."""
    return generator_for(seed, Purpose.baselines, name)


def noise_population(
    name: str,
    sources: torch.Tensor,
    normalizer: ParamNormalizer,
    scale: float,
    count: int,
    seed: int,
) -> Population:
    """`count` models: random rows of `sources` plus N(0, scale^2) in the zoo's per-tensor z-scores.
    Model i is drawn from its own stream, so the first i models are the same whatever `count`."""
    models = []
    for index in range(count):
        rng = population_stream(seed, f"{name}:{index}")
        source = sources[int(torch.randint(0, len(sources), (1,), generator=rng))]
        noise = torch.randn(source.shape[0], generator=rng)
        models.append(normalizer.denormalize(normalizer.normalize(source) + scale * noise))
    return Population(name, torch.stack(models))


def frontier_sources(
    originals: torch.Tensor, val_accuracy: torch.Tensor, baselines_cfg
) -> dict[str, torch.Tensor]:
    """What each noise frontier perturbs: every original, or the top selected_noise_fraction by
    validation."""
    count = max(1, round(baselines_cfg.selected_noise_fraction * len(originals)))
    return {"noise": originals, "selected_noise": originals[selection_order(val_accuracy)[:count]]}


def matched_noise_scale(generated_nn_l2_mean: float, dim: int) -> float:
    """Noise scale whose expected distance to its source original, sqrt(D) * sigma, equals the
    generated one."""
    return generated_nn_l2_mean / math.sqrt(dim)
