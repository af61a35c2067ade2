"""Are generated models new, or copies of the zoo? Distances and prediction overlap, against
baselines.

Measures of Zeng et al. (arXiv 2506.07998): in the normalised parameter space (per-tensor z-scores
of the zoo, as published), the L2 and cosine distance of each model to its nearest original; the IoU
of its set of misclassified test samples with the originals' (max over originals); and the same for
the critique's baselines and for the selection controls (the best originals by validation accuracy,
noise around them). The measures are in similarity.py, the populations in
baseline_populations.py, the computed verdict in verdict.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pdiff.config import Normalization
from pdiff.errors import GeneratedNotFinite
from pdiff.evaluation.baseline_populations import (
    FRONTIERS,
    frontier_sources,
    matched_noise_scale,
    noise_frontier_populations,
    point_populations,
)
from pdiff.evaluation.similarity import (
    Population,
    error_iou,
    max_iou,
    mean_pairwise_iou,
    nearest_original,
)
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
