"""family=subsets: binary class-subset tasks of one C-class dataset.

Task S (a non-empty proper subset of the C classes) labels a sample 1 when its class is in S, else
0. Its descriptor is S's C-bit code. Its symmetry is the complement: task ~S is task S with its
labels swapped, so a model of ~S with its two output rows swapped solves S exactly. No held-out task
has its complement in training, nor in the other held-out split (RPG's held-out codes each have
their complement in training).

Two held-out splits:
    complement  held-out codes drawn at random
    pair        every held-out code separates family.pair's two classes; no training code does

What the family cannot hide: the shared base model is trained on the C classes, and every task's
labels are a fixed function of them, so the base model already carries each held-out task's
labels (composing its logits is a baseline).
"""

from __future__ import annotations

import torch

from pdiff.config import HeldOutSplit
from pdiff.data.datasets import Dataset
from pdiff.errors import ConfigError
from pdiff.heldout.split import TaskSplit, split_seed_of, without_complements
from pdiff.seeds import Purpose, generator_for


class SubsetFamily:
    """Binary class-subset tasks of a C-class dataset; a task is its code (bit c set: class c is in
    S)."""

    name = "subsets"
    outputs = 2  # a binary task's head
    symmetric = True

    def __init__(self, classes: int):
        self.classes = classes
        self.full = (1 << classes) - 1

    @property
    def codes(self) -> list[int]:
        """Every task: the non-empty proper subsets."""
        return list(range(1, self.full))

    def descriptor(self, codes: list[int] | torch.Tensor) -> torch.Tensor:
        """[n, C] float bits of each code."""
        codes = torch.as_tensor(codes, dtype=torch.int64).view(-1, 1)
        return ((codes >> torch.arange(self.classes)) & 1).float()

    def code_of(self, classes: list[float]) -> int:
        """The code of a subset given by its classes (generate.task=[0, 3, 7])."""
        members = {int(c) for c in classes}
        if (
            not members
            or any(c != int(c) or not 0 <= c < self.classes for c in classes)
            or len(members) == self.classes
        ):
            raise ConfigError(
                f"generate.task={list(classes)} is invalid: list the classes of a non-empty proper "
                f"subset of the {self.classes} classes (integers in [0, {self.classes - 1}])"
            )
        if len(members) != len(classes):
            twice = sorted({int(c) for c in classes if list(classes).count(c) > 1})
            raise ConfigError(
                f"generate.task={list(classes)} is invalid: it names class(es) {twice} more than "
                "once; list each class of the subset once"
            )
        return sum(1 << c for c in members)

    def classes_of(self, code: int) -> list[int]:
        """The classes of task `code`, as generate.task lists them."""
        return [c for c in range(self.classes) if code >> c & 1]

    def complement(self, code: int) -> int:
        return self.full ^ code

    def labels(self, code: int, y: torch.Tensor) -> torch.Tensor:
        """Task `code`'s labels of samples whose classes are `y`: 1 when the class is in the
        subset."""
        return ((code >> y) & 1).long()

    def task_data(self, code: int, data: Dataset, with_test: bool = False) -> Dataset:
        """Task `code` on the shared C-class data: the same signals, binary labels; its test split
        empty unless `with_test` (the evaluate stage's, scoring test tasks)."""
        x_test, y_test = (
            (data.x_test, data.y_test) if with_test else (data.x_test[:0], data.y_test[:0])
        )
        return Dataset(
            data.x_train,
            self.labels(code, data.y_train),
            data.x_val,
            self.labels(code, data.y_val),
            x_test,
            self.labels(code, y_test),
            num_classes=self.outputs,
        )

    def distances(self, code: int, others: list[int], symmetric: bool = False) -> torch.Tensor:
        """Hamming distance of `code` to each of `others` [n]; symmetric: to the nearer of each and
        its complement."""
        target = self.descriptor([code])
        bits = self.descriptor(others)
        plain = (bits != target).sum(1)
        return torch.minimum(plain, self.classes - plain) if symmetric else plain

    def separates(self, code: int, pair: list[int]) -> bool:
        first, second = pair
        return (code >> first & 1) != (code >> second & 1)

    def split(self, family_cfg, seed: int) -> TaskSplit:
        """family.held_out test codes, family.val_tasks validation codes and family.train_tasks
        training codes, drawn by family.split_seed (the run's seed when unset). No two held-out
        codes are complements, and no held-out code or its complement is trained on."""
        cfg = family_cfg
        order = torch.randperm(
            len(self.codes), generator=generator_for(split_seed_of(cfg, seed), Purpose.task_split)
        )
        shuffled = [self.codes[i] for i in order.tolist()]
        pair = [int(c) for c in cfg.pair]
        if HeldOutSplit(cfg.split) is HeldOutSplit.pair:
            eligible = [code for code in shuffled if self.separates(code, pair)]
        else:
            eligible = shuffled
        held_out = without_complements(eligible, cfg.held_out + cfg.val_tasks, self.complement)
        if len(held_out) < cfg.held_out + cfg.val_tasks:
            raise ConfigError(
                f"task.family.held_out + val_tasks = {cfg.held_out + cfg.val_tasks} is more than "
                f"the {len(held_out)} distinct tasks split={HeldOutSplit(cfg.split).value} can hold "
                "out; lower either"
            )
        barred = set(held_out) | {self.complement(code) for code in held_out}
        candidates = [
            code
            for code in shuffled
            if code not in barred
            and not (HeldOutSplit(cfg.split) is HeldOutSplit.pair and self.separates(code, pair))
        ]
        if len(candidates) < cfg.train_tasks:
            raise ConfigError(
                f"task.family.train_tasks={cfg.train_tasks} is more than the {len(candidates)} "
                f"codes split={HeldOutSplit(cfg.split).value} leaves for training; lower it"
            )
        train = candidates[: cfg.train_tasks]
        return TaskSplit(
            sorted(train),
            held_out[cfg.held_out :],
            held_out[: cfg.held_out],
            sorted(candidates[cfg.train_tasks :]),
        )

    def split_check(self, stored: list[int], split: TaskSplit, family_cfg) -> dict[str, int]:
        """Counts that must all be 0, from the task ids the zoo stores: held-out tasks trained on,
        or whose complement (their label-swapped twin) is; held-out tasks in both val and test, or
        twins across them; and under split=pair, training tasks that separate the pair."""
        trained, pair = set(stored), [int(c) for c in family_cfg.pair]
        paired = HeldOutSplit(family_cfg.split) is HeldOutSplit.pair
        val, test = set(split.val), set(split.test)
        return {
            "held_out_in_training": sum(code in trained for code in split.held_out),
            "complement_in_training": sum(
                self.complement(code) in trained for code in split.held_out
            ),
            "val_in_test": len(val & test),
            "complement_across_held_out": sum(
                self.complement(code) in val | test for code in split.held_out
            ),
            "separating_pair_in_training": sum(self.separates(code, pair) for code in trained)
            if paired
            else 0,
        }

    def region(self, code: int, train: list[int]) -> str:
        """The row group of the report's table: the distance to the nearest training task (with
        the label swap)."""
        return f"distance {int(self.distances(code, train, symmetric=True).min())}"
