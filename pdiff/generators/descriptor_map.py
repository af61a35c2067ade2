"""A ridge map from task descriptors to flow coordinates (generator.descriptor_map): the flow of a
zoo of many tasks then models each row's residual from it, and sampling adds the map back, so that
the flow's work is what a linear map of the descriptor cannot say."""

from __future__ import annotations

import torch

ALPHAS = tuple(10.0**e for e in range(-3, 5))  # chosen leaving out one descriptor's rows at a time


def fit_descriptor_map(
    descriptors: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Ridge from descriptor [K, d] to rows [K, k] on the mean row of each distinct descriptor (every
    task weighs the same): (weight [d, k], bias [k], the penalty), the penalty the one whose
    leave-one-task-out error (closed form, through the hat matrix) is least."""
    tasks, inverse = torch.unique(descriptors.double(), dim=0, return_inverse=True)
    means = torch.zeros(len(tasks), rows.shape[1], dtype=torch.float64)
    means.index_add_(0, inverse, rows.double())
    means /= torch.bincount(inverse, minlength=len(tasks)).double()[:, None]
    x, y = tasks - tasks.mean(0), means - means.mean(0)
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    errors = []
    for alpha in ALPHAS:
        hat = x @ torch.linalg.solve(x.T @ x + alpha * eye, x.T)
        residual = (y - hat @ y) / (1 - hat.diagonal())[:, None]
        errors.append(float((residual**2).sum()))
    alpha = ALPHAS[min(range(len(ALPHAS)), key=errors.__getitem__)]
    weight = torch.linalg.solve(x.T @ x + alpha * eye, x.T @ y)
    bias = means.mean(0) - tasks.mean(0) @ weight
    return weight.float(), bias.float(), alpha


def apply_descriptor_map(
    weight: torch.Tensor, bias: torch.Tensor, descriptors: torch.Tensor
) -> torch.Tensor:
    """The map's coordinates for each descriptor [n, k]."""
    return descriptors.to(weight) @ weight + bias
