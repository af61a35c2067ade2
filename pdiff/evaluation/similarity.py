"""How close models are to the zoo's originals: the nearest original in parameter space (L2 and
cosine distance) and the overlap (IoU) of their misclassified test samples."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

COLUMN_BLOCK = 1 << 16  # columns of the distances' float64 products at a time


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

    Distances come from matrix products (|q|^2 + |o|^2 - 2 q.o; torch.cdist takes 12x longer at
    D = 10^6), summed in float64 over COLUMN_BLOCK columns at a time: no float64 copy of the
    originals is ever whole in memory."""
    count = len(originals)
    products = torch.zeros(len(queries), count, dtype=torch.float64)
    q_norm = torch.zeros(len(queries), dtype=torch.float64)
    o_norm = torch.zeros(count, dtype=torch.float64)
    for start in range(0, queries.shape[1], COLUMN_BLOCK):
        q = queries[:, start : start + COLUMN_BLOCK].double()
        o = originals[:, start : start + COLUMN_BLOCK].double()
        products += q @ o.T
        q_norm += q.pow(2).sum(1)
        o_norm += o.pow(2).sum(1)
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


def max_iou(population: Population, originals: Population, y_test: torch.Tensor) -> torch.Tensor:
    """[M] each model's max IoU of misclassified test samples with any original (its own source left
    out)."""
    iou = error_iou(population.predictions != y_test, originals.predictions != y_test)
    if population.copy_of is not None:
        iou[torch.arange(len(iou)), population.copy_of] = -1.0
    return iou.max(1).values
