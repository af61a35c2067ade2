"""What every task family hands the held-out-task job: a split of its tasks into training,
validation and test tasks, and which samples of a task the evaluate stage scores."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from pdiff.data.datasets import Dataset


class EvalSplit(Enum):
    """Which held-out tasks the evaluate stage scores, on which samples: validation tasks on their
    validation samples (choosing settings), or test tasks on their test samples (once, at the end)."""

    val = "val"
    test = "test"


@dataclass(frozen=True)
class TaskSplit:
    """The task ids the zoo trains on, the held-out ids settings are chosen on (val) and those
    scored once (test), and ids in none of them (the random-descriptor control draws these)."""

    train: list[int]
    val: list[int]
    test: list[int]
    unused: list[int]

    @property
    def held_out(self) -> list[int]:
        """Every task the zoo never sees: validation tasks, then test tasks."""
        return [*self.val, *self.test]

    def scored(self, eval_split: EvalSplit) -> list[int]:
        return self.val if eval_split is EvalSplit.val else self.test


def split_seed_of(family_cfg, seed: int) -> int:
    """The seed that draws the split: task.family.split_seed, or the run's seed when unset."""
    return seed if family_cfg.split_seed is None else int(family_cfg.split_seed)


def evaluation_arrays(data: Dataset, eval_split: EvalSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples of a task's data that the evaluate stage scores on: validation or test."""
    if eval_split is EvalSplit.val:
        return data.x_val, data.y_val
    return data.x_test, data.y_test


def without_complements(codes: list[int], count: int, complement) -> list[int]:
    """The first `count` of `codes` (in order) of which none is another's complement."""
    chosen: list[int] = []
    for code in codes:
        if len(chosen) == count:
            break
        if complement(code) not in chosen:
            chosen.append(code)
    return chosen
