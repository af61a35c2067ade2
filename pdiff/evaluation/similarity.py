"""How close models are to the zoo's originals: the nearest original in parameter space (L2 and
cosine distance) and the overlap (IoU) of their misclassified test samples."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pdiff.zoo.params import ParamNormalizer

COLUMN_BLOCK = 1 << 16  # columns of the distances' float64 sums at a time
CANDIDATES = 2  # nearest originals by the float32 ranking that are measured exactly


@dataclass
class Population:
    """A set of models: raw parameter vectors [M, D], their test predictions [M, N], and (for exact
    copies of originals) the index of the original each one is, which its similarity and distance
    leave out."""

    name: str
    vectors: torch.Tensor
    predictions: torch.Tensor | None = None
    copy_of: torch.Tensor | None = None


class NearestOriginals:
    """The nearest of K originals [K, D] to any queries [M, D], both in the space `normalizer` makes
    (the raw space without one): L2 distance, cosine distance and index.

    Nothing of D is copied: the originals (a memory map) and the queries are read and normalised
    COLUMN_BLOCK columns at a time. The originals are ranked by float32 matrix products of vectors
    centred on the originals' mean (|q|^2 + |o|^2 - 2 q.o: torch.cdist takes 12x longer at
    D = 10^6; centred, the products' float32 error stays far below the distances); the CANDIDATES
    nearest of each query are then measured exactly, in float64."""

    def __init__(self, originals: torch.Tensor, normalizer: ParamNormalizer | None = None):
        self.originals, self.normalizer = originals, normalizer
        self.mean = torch.zeros(originals.shape[1])
        for columns in self.blocks():
            self.mean[columns] = self.block(originals, columns).mean(0)
        self.norms, self.centred_norms = self.squared_norms(originals)

    def __call__(
        self, queries: torch.Tensor, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For [M, D] queries, leaving out original exclude[i] for query i (a copy is not its own
        neighbour)."""
        count = max(min(CANDIDATES, len(self.originals) - (exclude is not None)), 1)
        q_norm, q_centred = self.squared_norms(queries)
        ranking = self.ranking(queries, q_centred, exclude)
        candidates = ranking.topk(count, dim=1, largest=False).indices
        squared = torch.zeros(candidates.shape, dtype=torch.float64)  # [M, count]
        needed = candidates.unique()  # the only originals read again
        rows = torch.searchsorted(needed, candidates)
        for columns in self.blocks():
            block = self.block(self.originals, columns, needed).double()
            query = self.block(queries, columns).double()
            for slot in range(count):
                squared[:, slot] += (query - block[rows[:, slot]]).pow(2).sum(1)
        if exclude is not None:  # only when every original is excluded
            squared[candidates == exclude[:, None]] = math.inf
        best = squared.argmin(1, keepdim=True)
        index, squared = candidates.gather(1, best)[:, 0], squared.gather(1, best)[:, 0]
        o_norm = self.norms[index]
        product = (q_norm + o_norm - squared) / 2
        cosine = 1.0 - product / (q_norm.sqrt() * o_norm.sqrt()).clamp_min(1e-12)
        return squared.sqrt(), cosine, index

    def ranking(
        self, queries: torch.Tensor, q_centred: torch.Tensor, exclude: torch.Tensor | None
    ) -> torch.Tensor:
        """[M, K] approximate squared distances (float32 products of centred blocks; `q_centred`:
        the queries' centred squared norms)."""
        products = torch.zeros(len(queries), len(self.originals), dtype=torch.float64)
        for columns in self.blocks():
            centre = self.mean[columns]
            query = self.block(queries, columns) - centre
            products += (query @ (self.block(self.originals, columns) - centre).T).double()
        estimate = q_centred[:, None] + self.centred_norms[None] - 2 * products
        if exclude is not None:
            estimate[torch.arange(len(estimate)), exclude] = math.inf
        return estimate

    def blocks(self) -> list[slice]:
        dim = self.originals.shape[1]
        return [slice(start, start + COLUMN_BLOCK) for start in range(0, dim, COLUMN_BLOCK)]

    def block(
        self, vectors: torch.Tensor, columns: slice, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """float32 `columns` of `vectors` (of `rows` only, when given), normalised."""
        values = (vectors if rows is None else vectors[rows])[:, columns].float()
        if self.normalizer is None:
            return values
        return (values - self.normalizer.mean[columns]) / self.normalizer.std[columns]

    def squared_norms(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N] float64 squared L2 norms of normalised [N, D] rows, and of the same rows less the
        originals' mean, in one pass."""
        norms = torch.zeros(len(vectors), dtype=torch.float64)
        centred = torch.zeros(len(vectors), dtype=torch.float64)
        for columns in self.blocks():
            block = self.block(vectors, columns).double()
            norms += block.pow(2).sum(1)
            centred += (block - self.mean[columns].double()).pow(2).sum(1)
        return norms, centred


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
