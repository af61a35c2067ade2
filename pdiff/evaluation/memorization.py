"""Are generated models new, or copies of the zoo? Distances and prediction overlap, against
baselines.

Measures of Zeng et al. (arXiv 2506.07998): in the normalised parameter space (per-tensor z-scores
of the zoo, as published), the L2 and cosine distance of each model to its nearest original; the IoU
of its set of misclassified test samples with the originals' (max over originals); and the same for
the critique's baselines and for the selection controls (the best originals by validation accuracy,
noise around them). The measures are in similarity.py, the populations in
baseline_populations.py and noise_frontier.py, the computed verdict in verdict.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pdiff.config import FrontierSearch, Normalization
from pdiff.errors import GeneratedNotFinite
from pdiff.evaluation.baseline_populations import (
    FRONTIERS,
    frontier_sources,
    matched_noise_scale,
    point_populations,
)
from pdiff.evaluation.noise_frontier import NoiseFrontier, trace_frontier
from pdiff.evaluation.similarity import NearestOriginals, Population, error_iou, mean_pairwise_iou
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
    nearest: NearestOriginals,
    y_test: torch.Tensor,
    novelty_threshold: float,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Figures of one population (accuracy, nearest-original distances, error IoU, novel fraction),
    and its per-model nearest-original L2 and max IoU (`nearest` normalises what it measures)."""
    l2, cosine, _ = nearest(population.vectors, exclude=population.copy_of)
    errors, errors_orig = population.predictions != y_test, originals.predictions != y_test
    iou = error_iou(errors, errors_orig)
    if population.copy_of is not None:
        iou[torch.arange(len(iou)), population.copy_of] = -1.0
    accuracy = (~errors).double().mean(1) * 100
    max_iou = iou.max(1).values
    figures = {
        "n": len(population.vectors),
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


class MemorizationTable:
    """The memorisation table, one population at a time: each is predicted (a copy of originals
    reuses their predictions), described against the originals and then let go, so that only the
    predictions and figures of the populations are held, never their vectors.

    'Novel' means further from every original than the originals' median nearest-neighbour
    distance."""

    def __init__(
        self,
        predict: Callable[[torch.Tensor], torch.Tensor],
        originals: torch.Tensor,
        normalizer: ParamNormalizer,
        y_test: torch.Tensor,
    ):
        self.predict, self.y_test = predict, y_test
        self.originals = Population("originals", originals, copy_of=torch.arange(len(originals)))
        self.originals.predictions = predict(originals)
        self.nearest = NearestOriginals(originals, normalizer)
        l2 = self.nearest(originals, exclude=self.originals.copy_of)[0]
        self.threshold = float(l2.median())
        self.table: dict = {"originals_nn_l2_median": round(self.threshold, 6)}
        self.per_model: dict[str, torch.Tensor] = {}
        self.predictions: dict[str, torch.Tensor] = {}
        self.add(self.originals)

    def similarity(self, name: str) -> float:
        return float(self.per_model[f"max_iou:{name}"].mean())

    def add(self, population: Population) -> tuple[float, float]:
        """Predict (unless done) and describe `population`; its similarity (mean max IoU) and mean
        accuracy."""
        if population.predictions is None:
            copies = population.copy_of
            population.predictions = (
                self.originals.predictions[copies]
                if copies is not None
                else self.predict(population.vectors)
            )
        figures, values = describe(
            population, self.originals, self.nearest, self.y_test, self.threshold
        )
        self.table[population.name] = figures
        self.per_model.update({f"{key}:{population.name}": v for key, v in values.items()})
        self.predictions[population.name] = population.predictions.to(torch.int16)
        return self.similarity(population.name), figures["acc_mean"]


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

    Each noise frontier is predicted at the scales evaluate.baselines.frontier asks for
    (noise_frontier.py), around the scale matching the generated models' distance.
    GeneratedNotFinite before any work when a generated vector holds NaN or inf.
    """
    check_finite_generated(generated)
    table = MemorizationTable(predict, originals, normalizer, y_test)
    similarity, _ = table.add(Population("generated", generated))
    matched = matched_noise_scale(
        float(table.per_model["nn_l2:generated"].mean()), originals.shape[1]
    )
    configured = list(baselines_cfg.noise_scales)
    search = FrontierSearch(baselines_cfg.frontier)  # the zoo check reads the noise frontier
    for family, sources in frontier_sources(originals, val_accuracy, baselines_cfg).items():
        frontier = NoiseFrontier(
            FRONTIERS[family],
            sources,
            normalizer,
            seed,
            baselines_cfg.models_per_scale,
            table.add,
        )
        at_originals = table.similarity("originals") if family == "noise" else None
        trace_frontier(frontier, search, configured, matched, similarity, at_originals)
    for population in point_populations(
        originals, val_accuracy, normalizer, len(generated), seed, baselines_cfg
    ):
        table.add(population)
        del population  # one population's vectors alive at a time
    return {**table.predictions, **table.per_model, "y_test": y_test}, table.table
