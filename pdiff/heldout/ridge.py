"""Ridge regression from task descriptors to rows (weights, or a generator's coordinates), fitted on
each task's mean row (every task weighs the same) with an unpenalised intercept, its penalty chosen
leaving out one task at a time: exactly, through the hat matrix. The ridge baseline
(pdiff.heldout.baselines) and the flow's descriptor map (generator.descriptor_map) are both this."""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALPHAS = tuple(10.0**e for e in range(-3, 5))


@dataclass(frozen=True)
class TaskRidge:
    """rows ~ descriptors @ weight + bias; `alpha` is the penalty leaving one task out chose."""

    weight: torch.Tensor  # [d, k]
    bias: torch.Tensor  # [k]
    alpha: float

    def __call__(self, descriptors: torch.Tensor) -> torch.Tensor:
        """The map's rows for each descriptor [n, k]."""
        return descriptors.to(self.weight) @ self.weight + self.bias


def fit_task_ridge(descriptors: torch.Tensor, rows: torch.Tensor) -> TaskRidge:
    """Ridge from descriptor [K, d] to rows [K, k] on the mean row of each distinct descriptor, in
    float64; the penalty the one of ALPHAS whose leave-one-task-out squared error is least."""
    tasks, inverse = torch.unique(descriptors.double(), dim=0, return_inverse=True)
    means = torch.zeros(len(tasks), rows.shape[1], dtype=torch.float64)
    means.index_add_(0, inverse, rows.double())
    means /= torch.bincount(inverse, minlength=len(tasks)).double()[:, None]
    x = torch.cat([torch.ones(len(tasks), 1, dtype=torch.float64), tasks], 1)
    penalty = torch.diag(torch.tensor([0.0] + [1.0] * tasks.shape[1], dtype=torch.float64))

    def solved(alpha: float) -> torch.Tensor:
        return torch.linalg.solve(x.T @ x + alpha * penalty, x.T)  # [d + 1, T]

    errors = []
    for alpha in ALPHAS:
        hat = x @ solved(alpha)
        residual = (means - hat @ means) / (1 - hat.diagonal())[:, None]
        errors.append(float((residual**2).sum()))
    alpha = ALPHAS[min(range(len(ALPHAS)), key=errors.__getitem__)]
    coefficients = solved(alpha) @ means
    return TaskRidge(coefficients[1:], coefficients[0], alpha)
