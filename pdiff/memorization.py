"""Are generated models new, or copies of the zoo? Distances and prediction overlap, against baselines.

Measures of Zeng et al. (arXiv 2506.07998): in the normalised parameter space (per-tensor z-scores of
the zoo, as published), the L2 and cosine distance of each model to its nearest original; the IoU of
its set of misclassified test samples with the originals' (max over originals); and the same for
the critique's baselines (see baseline_populations). The computed verdict is in pdiff/verdict.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pdiff.config import Normalization
from pdiff.params import ParamNormalizer, ParamSpec
from pdiff.seeds import Purpose, generator_for


@dataclass
class Population:
    """A set of models: raw parameter vectors [M, D] and their test predictions [M, N]."""

    name: str
    vectors: torch.Tensor
    predictions: torch.Tensor | None = None


def nearest_original(queries: torch.Tensor, originals: torch.Tensor, exclude_self: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For [M, D] queries: L2 distance, cosine distance and index of the nearest of the [K, D] originals."""
    l2 = torch.cdist(queries.double(), originals.double())
    if exclude_self:
        l2.fill_diagonal_(math.inf)
    distance, index = l2.min(dim=1)
    unit_q = torch.nn.functional.normalize(queries.double(), dim=1)
    unit_o = torch.nn.functional.normalize(originals.double(), dim=1)
    cosine = 1.0 - (unit_q * unit_o[index]).sum(1)
    return distance, cosine, index


def error_iou(errors_a: torch.Tensor, errors_b: torch.Tensor) -> torch.Tensor:
    """IoU of misclassified sets: [M, N] and [K, N] booleans -> [M, K], by matrix products (1 if both empty)."""
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


NOISE_PREFIX = "noise_"  # the noise family: every population named noise_* lies on the frontier
POINT_BASELINES = ("gaussian", "average16", "average", "interpolation")


def baseline_populations(originals: torch.Tensor, normalizer: ParamNormalizer, matched_scale: float, n: int,
                         seed: int, baselines_cfg) -> list[Population]:
    """The critique's baselines (boyazeng/weight_memorization): originals + noise at every frontier scale and at
    the scale matching the generated models, a per-coordinate Gaussian fitted to the zoo, averages of 16 random
    originals, the average of all originals, and random interpolations of two originals.

    Noise is added in the zoo's per-tensor z-scores; `seed` is the run's seed (its baselines stream).
    """
    rng = generator_for(seed, Purpose.baselines)
    z = normalizer.normalize(originals)
    k, dim = z.shape

    def noisy(scale: float, count: int) -> torch.Tensor:
        pick = torch.randint(0, k, (count,), generator=rng)
        return normalizer.denormalize(z[pick] + scale * torch.randn(count, dim, generator=rng))

    populations = [Population(f"{NOISE_PREFIX}{scale:g}", noisy(scale, baselines_cfg.models_per_scale))
                   for scale in baselines_cfg.noise_scales]
    populations.append(Population(f"{NOISE_PREFIX}matched_{matched_scale:.3g}", noisy(matched_scale, n)))
    mean, std = z.mean(0), z.std(0) if k > 1 else torch.zeros(dim)
    populations.append(Population("gaussian", normalizer.denormalize(mean + std * torch.randn(n, dim, generator=rng))))
    members = min(baselines_cfg.average_of, k)
    picks = torch.rand(n, k, generator=rng).argsort(1)[:, :members]
    weights = torch.zeros(n, k, dtype=originals.dtype).scatter_(1, picks, 1.0 / members)
    populations.append(Population("average16", weights @ originals))
    populations.append(Population("average", originals.mean(0, keepdim=True)))
    pairs = torch.randint(0, k, (n, 2), generator=rng)
    alpha = torch.rand(n, 1, generator=rng)
    mixed = alpha * originals[pairs[:, 0]] + (1 - alpha) * originals[pairs[:, 1]]
    populations.append(Population("interpolation", mixed))
    return populations


def matched_noise_scale(generated_nn_l2_mean: float, dim: int) -> float:
    """Noise scale whose expected distance to its source original, sqrt(D) * sigma, equals the generated one."""
    return generated_nn_l2_mean / math.sqrt(dim)


def memorization_normalizer(spec: ParamSpec, originals: torch.Tensor) -> ParamNormalizer:
    return ParamNormalizer.fit(spec, originals, Normalization.per_tensor)


def describe(population: Population, originals: Population, normalizer: ParamNormalizer, y_test: torch.Tensor,
             novelty_threshold: float) -> tuple[dict, dict[str, torch.Tensor]]:
    """Figures of one population (accuracy, nearest-original distances, error IoU, novel fraction),
    and its per-model nearest-original L2 and max IoU."""
    z, z_orig = normalizer.normalize(population.vectors), normalizer.normalize(originals.vectors)
    is_originals = population is originals
    l2, cosine, _ = nearest_original(z, z_orig, exclude_self=is_originals)
    errors, errors_orig = population.predictions != y_test, originals.predictions != y_test
    iou = error_iou(errors, errors_orig)
    if is_originals:
        iou.fill_diagonal_(-1.0)
    accuracy = (~errors).double().mean(1) * 100
    max_iou = iou.max(1).values
    figures = {"n": len(z), "acc_mean": round(float(accuracy.mean()), 4), "acc_best": round(float(accuracy.max()), 4),
            "acc_min": round(float(accuracy.min()), 4),
            "nn_l2_mean": round(float(l2.mean()), 6), "nn_l2_median": round(float(l2.median()), 6),
            "nn_cos_mean": round(float(cosine.mean()), 8),
            "acc_std": round(float(accuracy.std()) if len(accuracy) > 1 else 0.0, 4),
            "max_iou_mean": round(float(max_iou.mean()), 4),
            "max_iou_std": round(float(max_iou.std()) if len(max_iou) > 1 else 0.0, 4),
            "pairwise_iou_within": mean_pairwise_iou(errors),
            "iou_with_originals_mean": round(float(iou.clamp_min(0).mean()), 4),
            "novel_fraction": round(float((l2 > novelty_threshold).double().mean()), 4)}
    return figures, {"nn_l2": l2, "max_iou": max_iou}


def evaluate_populations(predict: Callable[[torch.Tensor], torch.Tensor], originals: torch.Tensor,
                         generated: torch.Tensor, normalizer: ParamNormalizer, y_test: torch.Tensor, seed: int,
                         baselines_cfg) -> tuple[dict[str, torch.Tensor], dict]:
    """Test predictions of originals, generated models and every baseline (`predict`: [M, D] -> [M, N]),
    with the per-model figures, and the memorisation table."""
    populations = [Population("originals", originals), Population("generated", generated)]
    generated_l2 = nearest_original(normalizer.normalize(generated), normalizer.normalize(originals))[0]
    scale = matched_noise_scale(float(generated_l2.mean()), originals.shape[1])
    populations += baseline_populations(originals, normalizer, scale, len(generated), seed, baselines_cfg)
    for population in populations:
        population.predictions = predict(population.vectors)
    table, per_model = memorization_table(populations[0], populations[1], populations[2:], normalizer, y_test)
    predictions = {p.name: p.predictions.to(torch.int16) for p in populations}
    return {**predictions, **per_model, "y_test": y_test}, table


def memorization_table(originals: Population, generated: Population, baselines: list[Population],
                       normalizer: ParamNormalizer, y_test: torch.Tensor) -> tuple[dict, dict[str, torch.Tensor]]:
    """({population: figures}, {"nn_l2:<population>" and "max_iou:<population>": per-model values}).

    'Novel' means further from every original than the originals' median nearest-neighbour distance.
    """
    z_orig = normalizer.normalize(originals.vectors)
    threshold = float(nearest_original(z_orig, z_orig, exclude_self=True)[0].median())
    table, per_model = {"originals_nn_l2_median": round(threshold, 6)}, {}
    for population in (originals, generated, *baselines):
        table[population.name], values = describe(population, originals, normalizer, y_test, threshold)
        per_model.update({f"{key}:{population.name}": value for key, value in values.items()})
    return table, per_model
