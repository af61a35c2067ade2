"""The populations the generated models are compared with: the critique's point baselines (a
Gaussian fitted to the zoo, averages, interpolations), the selection controls (the best originals by
validation accuracy) and the noise frontiers (originals plus noise at growing scales), with the
names they go by in the report."""

from __future__ import annotations

import math

import torch

from pdiff.evaluation.similarity import Population, max_iou
from pdiff.zoo.params import ParamNormalizer

FRONTIERS = {
    "noise": "noise_",
    "selected_noise": "selected_noise_",
}  # family: prefix of its populations
FRONTIER_EXTENSIONS = (
    4  # at most this many extra scales each way, to cover the generated similarity
)


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
    rng: torch.Generator,
    baselines_cfg,
) -> list[Population]:
    """The critique's point baselines (boyazeng/weight_memorization: a per-coordinate Gaussian
    fitted to the zoo, averages of m = evaluate.baselines.average_of random originals (16 as
    published), named average<m>, the average of all, random interpolations of two) and the
    selection controls: the top 1 / top-q originals by validation accuracy (exact copies), and the
    average of the m best (selected_average<m>)."""
    z = normalizer.normalize(originals)
    k, dim = z.shape
    mean, std = z.mean(0), z.std(0) if k > 1 else torch.zeros(dim)
    populations = [
        Population(
            "gaussian", normalizer.denormalize(mean + std * torch.randn(n, dim, generator=rng))
        )
    ]
    average, selected_average = average_labels(baselines_cfg.average_of)
    members = min(
        baselines_cfg.average_of, k
    )  # config validation refuses average_of > task.param.k
    picks = torch.rand(n, k, generator=rng).argsort(1)[:, :members]
    weights = torch.zeros(n, k, dtype=originals.dtype).scatter_(1, picks, 1.0 / members)
    populations.append(Population(average, weights @ originals))
    populations.append(Population("average", originals.mean(0, keepdim=True)))
    pairs = torch.randint(0, k, (n, 2), generator=rng)
    alpha = torch.rand(n, 1, generator=rng)
    mixed = alpha * originals[pairs[:, 0]] + (1 - alpha) * originals[pairs[:, 1]]
    populations.append(Population("interpolation", mixed))
    order = selection_order(val_accuracy)
    for name, count in (
        ("selected_top1", 1),
        *((selected_label(q), max(1, round(q * k))) for q in baselines_cfg.selected_fractions),
    ):
        populations.append(Population(name, originals[order[:count]], copy_of=order[:count]))
    populations.append(
        Population(selected_average, originals[order[:members]].mean(0, keepdim=True))
    )
    return populations


def noise_population(
    name: str,
    sources: torch.Tensor,
    normalizer: ParamNormalizer,
    scale: float,
    count: int,
    rng: torch.Generator,
) -> Population:
    """`count` models: random rows of `sources` plus N(0, scale^2) in the zoo's per-tensor z-scores."""
    z = normalizer.normalize(sources)
    pick = torch.randint(0, len(z), (count,), generator=rng)
    return Population(
        name,
        normalizer.denormalize(z[pick] + scale * torch.randn(count, z.shape[1], generator=rng)),
    )


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


def noise_frontier_populations(
    prefix: str,
    sources: torch.Tensor,
    normalizer: ParamNormalizer,
    matched: float,
    rng: torch.Generator,
    baselines_cfg,
    predict,
    originals: Population,
    y_test: torch.Tensor,
    generated_similarity: float,
) -> list[Population]:
    """One noise frontier, predicted: its configured scales, the matched scale, and extensions that
    cover the generated similarity (a third of the smallest scale, or three times the largest, up to
    FRONTIER_EXTENSIONS)."""
    scales = sorted(baselines_cfg.noise_scales)
    frontier = []
    for scale in scales:
        frontier.append(
            noise_population(
                f"{prefix}{scale:g}",
                sources,
                normalizer,
                scale,
                baselines_cfg.models_per_scale,
                rng,
            )
        )
    frontier.append(
        noise_population(
            f"{prefix}matched_{matched:.3g}",
            sources,
            normalizer,
            matched,
            baselines_cfg.models_per_scale,
            rng,
        )
    )
    for population in frontier:
        population.predictions = predict(population.vectors)
    similarities = [float(max_iou(p, originals, y_test).mean()) for p in frontier]
    smaller, larger = scales[0], scales[-1]
    for _ in range(2 * FRONTIER_EXTENSIONS):
        if (
            generated_similarity > max(similarities)
            and smaller > scales[0] / 3**FRONTIER_EXTENSIONS
        ):
            smaller = smaller / 3
            scale = smaller
        elif (
            generated_similarity < min(similarities)
            and larger < scales[-1] * 3**FRONTIER_EXTENSIONS
        ):
            larger = larger * 3
            scale = larger
        else:
            break
        population = noise_population(
            f"{prefix}{scale:.3g}", sources, normalizer, scale, baselines_cfg.models_per_scale, rng
        )
        population.predictions = predict(population.vectors)
        frontier.append(population)
        similarities.append(float(max_iou(population, originals, y_test).mean()))
    return frontier
