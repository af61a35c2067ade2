"""Are generated models new, or copies of the zoo? Distances and prediction overlap, against
baselines.

Measures of Zeng et al. (arXiv 2506.07998): in the normalised parameter space (per-tensor z-scores
of the zoo, as published), the L2 and cosine distance of each model to its nearest original; the IoU
of its set of misclassified test samples with the originals' (max over originals); and the same for
the critique's baselines and for the selection controls (the best originals by validation accuracy,
noise around them). The computed verdict is in pdiff/evaluation/verdict.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pdiff.config import Normalization
from pdiff.errors import GeneratedNotFinite
from pdiff.seeds import Purpose, generator_for
from pdiff.zoo.params import ParamNormalizer, ParamSpec

GENERATED_FILE = "generated/params.safetensors"  # stage=generate's output, under paths.output_dir


def check_finite_generated(generated: torch.Tensor) -> None:
    """GeneratedNotFinite naming the file and the count of [M, D] rows holding a NaN or an inf."""
    bad = int((~generated.isfinite()).any(1).sum())
    if bad:
        raise GeneratedNotFinite(
            f"{GENERATED_FILE} holds {bad} of {len(generated)} generated parameter vectors with non-finite values "
            "(NaN or inf): the generator diverged and its samples cannot be evaluated. Retrain the generator (a new "
            "paths.output_dir, or delete generator/ and generated/ under it; e.g. with a lower learning rate or "
            "trainer.grad_clip), then run stage=generate and stage=evaluate again"
        )


@dataclass
class Population:
    """A set of models: raw parameter vectors [M, D], their test predictions [M, N], and (for exact
    copies of originals) the index of the original each one is, which its similarity and distance
    leave out."""

    name: str
    vectors: torch.Tensor
    predictions: torch.Tensor | None = None
    copy_of: torch.Tensor | None = None


def nearest_original(
    queries: torch.Tensor, originals: torch.Tensor, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For [M, D] queries: L2 distance, cosine distance and index of the nearest of the [K, D]
    originals, leaving out original exclude[i] for query i (a copy is not its own neighbour).

    Distances come from one float64 matrix product (|q|^2 + |o|^2 - 2 q.o): an M x K x D product,
    where torch.cdist takes 12x longer at D = 10^6."""
    q, o = queries.double(), originals.double()
    q_norm, o_norm = q.pow(2).sum(1), o.pow(2).sum(1)
    products = q @ o.T
    l2 = (q_norm[:, None] + o_norm[None] - 2 * products).clamp_min(0).sqrt()
    if exclude is not None:
        l2[torch.arange(len(l2)), exclude] = math.inf
    distance, index = l2.min(dim=1)
    picked = products.gather(1, index[:, None])[:, 0]
    cosine = 1.0 - picked / (q_norm.sqrt() * o_norm[index].sqrt()).clamp_min(1e-12)
    return distance, cosine, index


def error_iou(errors_a: torch.Tensor, errors_b: torch.Tensor) -> torch.Tensor:
    """IoU of misclassified sets: [M, N] and [K, N] booleans -> [M, K], by matrix products (1 if
    both empty)."""
    a, b = errors_a.double(), errors_b.double()
    intersection = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))


def mean_pairwise_iou(errors: torch.Tensor) -> float | None:
    """Mean IoU over distinct pairs within one population (None for a single model)."""
    if len(errors) < 2:
        return None
    iou = error_iou(errors, errors)
    return round(float((iou.sum() - iou.diagonal().sum()) / (len(errors) * (len(errors) - 1))), 4)


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


def memorization_normalizer(spec: ParamSpec, originals: torch.Tensor) -> ParamNormalizer:
    return ParamNormalizer.fit(spec, originals, Normalization.per_tensor)


def describe(
    population: Population,
    originals: Population,
    z_orig: torch.Tensor,
    normalizer: ParamNormalizer,
    y_test: torch.Tensor,
    novelty_threshold: float,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Figures of one population (accuracy, nearest-original distances, error IoU, novel fraction),
    and its per-model nearest-original L2 and max IoU (z_orig: the originals, normalised)."""
    z = normalizer.normalize(population.vectors)
    l2, cosine, _ = nearest_original(z, z_orig, exclude=population.copy_of)
    errors, errors_orig = population.predictions != y_test, originals.predictions != y_test
    iou = error_iou(errors, errors_orig)
    if population.copy_of is not None:
        iou[torch.arange(len(iou)), population.copy_of] = -1.0
    accuracy = (~errors).double().mean(1) * 100
    max_iou = iou.max(1).values
    figures = {
        "n": len(z),
        "acc_mean": round(float(accuracy.mean()), 4),
        "acc_best": round(float(accuracy.max()), 4),
        "acc_min": round(float(accuracy.min()), 4),
        "nn_l2_mean": round(float(l2.mean()), 6),
        "nn_l2_median": round(float(l2.median()), 6),
        "nn_cos_mean": round(float(cosine.mean()), 8),
        "acc_std": round(float(accuracy.std()) if len(accuracy) > 1 else 0.0, 4),
        "max_iou_mean": round(float(max_iou.mean()), 4),
        "max_iou_std": round(float(max_iou.std()) if len(max_iou) > 1 else 0.0, 4),
        "pairwise_iou_within": mean_pairwise_iou(errors),
        "iou_with_originals_mean": round(float(iou.clamp_min(0).mean()), 4),
        "novel_fraction": round(float((l2 > novelty_threshold).double().mean()), 4),
    }
    return figures, {"nn_l2": l2, "max_iou": max_iou}


def evaluate_populations(
    predict: Callable[[torch.Tensor], torch.Tensor],
    originals: torch.Tensor,
    val_accuracy: torch.Tensor,
    generated: torch.Tensor,
    normalizer: ParamNormalizer,
    y_test: torch.Tensor,
    seed: int,
    baselines_cfg,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Test predictions of originals, generated models and every baseline (`predict`: [M, D] -> [M,
    N]), with the per-model figures, and the memorisation table. Selection uses the originals'
    validation accuracies only.

    Each noise frontier gets the scales of evaluate.baselines.noise_scales plus the one matching the
    generated models' distance, then smaller (or larger) scales until its similarities cover the
    generated similarity. GeneratedNotFinite before any work when a generated vector holds NaN or
    inf.
    """
    check_finite_generated(generated)
    k = len(originals)
    population_originals = Population(
        "originals", originals, predict(originals), copy_of=torch.arange(k)
    )
    population_generated = Population("generated", generated, predict(generated))
    generated_similarity = float(max_iou(population_generated, population_originals, y_test).mean())
    generated_l2 = nearest_original(
        normalizer.normalize(generated), normalizer.normalize(originals)
    )[0]
    matched = matched_noise_scale(float(generated_l2.mean()), originals.shape[1])
    rng = generator_for(seed, Purpose.baselines)
    populations = [population_originals, population_generated]
    for family, sources in frontier_sources(originals, val_accuracy, baselines_cfg).items():
        populations += noise_frontier_populations(
            FRONTIERS[family],
            sources,
            normalizer,
            matched,
            rng,
            baselines_cfg,
            predict,
            population_originals,
            y_test,
            generated_similarity,
        )
    for population in point_populations(
        originals, val_accuracy, normalizer, len(generated), rng, baselines_cfg
    ):
        population.predictions = predict(population.vectors)
        populations.append(population)
    table, per_model = memorization_table(
        populations[0], populations[1], populations[2:], normalizer, y_test
    )
    predictions = {p.name: p.predictions.to(torch.int16) for p in populations}
    return {**predictions, **per_model, "y_test": y_test}, table


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


def max_iou(population: Population, originals: Population, y_test: torch.Tensor) -> torch.Tensor:
    """[M] each model's max IoU of misclassified test samples with any original (its own source left
    out)."""
    iou = error_iou(population.predictions != y_test, originals.predictions != y_test)
    if population.copy_of is not None:
        iou[torch.arange(len(iou)), population.copy_of] = -1.0
    return iou.max(1).values


def memorization_table(
    originals: Population,
    generated: Population,
    baselines: list[Population],
    normalizer: ParamNormalizer,
    y_test: torch.Tensor,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """({population: figures}, {"nn_l2:<population>" and "max_iou:<population>": per-model values}).

    'Novel' means further from every original than the originals' median nearest-neighbour distance.
    """
    z_orig = normalizer.normalize(originals.vectors)
    threshold = float(nearest_original(z_orig, z_orig, exclude=originals.copy_of)[0].median())
    table, per_model = {"originals_nn_l2_median": round(threshold, 6)}, {}
    for population in (originals, generated, *baselines):
        table[population.name], values = describe(
            population, originals, z_orig, normalizer, y_test, threshold
        )
        per_model.update({f"{key}:{population.name}": value for key, value in values.items()})
    return table, per_model
