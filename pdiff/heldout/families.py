"""Task families: many tasks on one dataset, each named by a descriptor, and which of them the zoo
never sees.

family=subsets: task S (a non-empty proper subset of the C classes) labels a sample 1 when its class
is in S, else 0. Its descriptor is S's C-bit code. Its symmetry is the complement: task ~S is task S
with its labels swapped, so a model of ~S with its two output rows swapped solves S exactly (RPG's
held-out codes each have their complement in training; here they never do).

Two held-out splits:
    complement  held-out codes drawn at random; neither a held-out code nor its complement is
    trained on pair        every held-out code separates family.pair's two classes; no training code
    does
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pdiff.config import FamilyName, HeldOutSplit, require
from pdiff.errors import ConfigError
from pdiff.seeds import Purpose, generator_for


@dataclass(frozen=True)
class TaskSplit:
    """The codes the zoo trains on and the codes it never sees, in a fixed order."""

    train: list[int]
    held_out: list[int]


class SubsetFamily:
    """Binary class-subset tasks of a C-class dataset; a task is its code (bit c set: class c is in
    S)."""

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

    symmetric = complement  # the task whose model solves this one after a label swap

    def labels(self, code: int, y: torch.Tensor) -> torch.Tensor:
        """Task `code`'s labels of samples whose classes are `y`: 1 when the class is in the
        subset."""
        return ((code >> y) & 1).long()

    def distances(self, code: int, others: list[int], symmetric: bool = False) -> torch.Tensor:
        """Hamming distance of `code` to each of `others` [n]; symmetric: to the nearer of each and
        its complement."""
        target = self.descriptor([code])
        bits = self.descriptor(others)
        plain = (bits != target).sum(1)
        return torch.minimum(plain, self.classes - plain) if symmetric else plain

    def split(self, family_cfg) -> TaskSplit:
        """family.split's held-out codes and family.train_tasks training codes, drawn by
        family.split_seed."""
        cfg = family_cfg
        order = torch.randperm(
            len(self.codes), generator=generator_for(cfg.split_seed, Purpose.task_split)
        )
        shuffled = [self.codes[i] for i in order.tolist()]
        if HeldOutSplit(cfg.split) is HeldOutSplit.pair:
            first, second = (int(c) for c in cfg.pair)
            separates = [code for code in shuffled if (code >> first & 1) != (code >> second & 1)]
            held_out = separates[: cfg.held_out]
            candidates = [code for code in shuffled if (code >> first & 1) == (code >> second & 1)]
        else:
            held_out = []
            for code in shuffled:
                if len(held_out) == cfg.held_out:
                    break
                if self.complement(code) not in held_out:
                    held_out.append(code)
            barred = set(held_out) | {self.complement(code) for code in held_out}
            candidates = [code for code in shuffled if code not in barred]
        if len(candidates) < cfg.train_tasks:
            raise ConfigError(
                f"task.family.train_tasks={cfg.train_tasks} is more than the {len(candidates)} "
                f"codes split={HeldOutSplit(cfg.split).value} leaves for training; lower it"
            )
        return TaskSplit(sorted(candidates[: cfg.train_tasks]), held_out)

    def split_check(self, split: TaskSplit) -> dict[str, int]:
        """Counts that must all be 0: held-out codes trained on, or whose complement (their
        symmetric image) is."""
        train = set(split.train)
        return {
            "held_out_in_training": sum(code in train for code in split.held_out),
            "complement_in_training": sum(
                self.complement(code) in train for code in split.held_out
            ),
            "symmetric_in_training": sum(self.symmetric(code) in train for code in split.held_out),
        }


def check_family_counts(family_cfg) -> None:
    """ConfigError for a count of task.family that makes no zoo (checked first: task.param.k follows
    from them)."""
    cfg = family_cfg
    require(cfg.train_tasks >= 2, "task.family.train_tasks", cfg.train_tasks, "must be >= 2")
    require(cfg.held_out >= 1, "task.family.held_out", cfg.held_out, "must be >= 1")
    for key in ("seeds", "checkpoints", "k_nearest"):
        require(cfg[key] >= 1, f"task.family.{key}", cfg[key], "must be >= 1")
    require(
        cfg.k_nearest <= cfg.train_tasks,
        "task.family.k_nearest",
        cfg.k_nearest,
        f"must be <= task.family.train_tasks={cfg.train_tasks} (the nearest training tasks "
        "averaged)",
    )
    require(cfg.epochs >= 0, "task.family.epochs", cfg.epochs, "must be >= 0")


def check_family(task_cfg, classes: int) -> None:
    """ConfigError for a task.family that cannot make its split (checked before any work)."""
    cfg = task_cfg.family
    check_family_counts(cfg)
    require(
        task_cfg.param.k == zoo_size(cfg),
        "task.param.k",
        task_cfg.param.k,
        "a zoo of many tasks holds task.family.train_tasks x seeds x checkpoints = "
        f"{zoo_size(cfg)} checkpoints: "
        "set task.param.k to that",
    )
    require(
        list(task_cfg.param.layers) == ["*"],
        "task.param.layers",
        list(task_cfg.param.layers),
        "a zoo of many tasks generates whole networks: ['*']",
    )
    require(
        task_cfg.collect.runs <= cfg.train_tasks * cfg.seeds,
        "task.collect.runs",
        task_cfg.collect.runs,
        f"must be <= task.family.train_tasks x seeds = {cfg.train_tasks * cfg.seeds} (a run "
        "trains whole tasks)",
    )
    require(
        cfg.eval_split in ("test", "val"),
        "task.family.eval_split",
        cfg.eval_split,
        "allowed: test, val",
    )
    require(classes >= 3, "data", f"{classes} classes", "a subsets family needs at least 3 classes")
    pair = [int(c) for c in cfg.pair]
    require(
        len(pair) == 2 and pair[0] != pair[1] and all(0 <= c < classes for c in pair),
        "task.family.pair",
        list(cfg.pair),
        f"must be two different classes in [0, {classes - 1}]",
    )
    family = SubsetFamily(classes)
    if HeldOutSplit(cfg.split) is HeldOutSplit.pair:
        separating = 2 ** (classes - 1)
        require(
            cfg.held_out <= separating,
            "task.family.held_out",
            cfg.held_out,
            f"at most {separating} codes separate classes {pair}",
        )
    else:
        require(
            cfg.held_out <= len(family.codes) // 2,
            "task.family.held_out",
            cfg.held_out,
            f"at most {len(family.codes) // 2} (one of each complement pair)",
        )
    family.split(cfg)


def check_generate_task(cfg, classes: int, scored: bool) -> None:
    """ConfigError unless generate.task names a task of the family; when the run evaluates it
    (`scored`), one of the held-out tasks: the evaluation scores a task against the zoo it never
    saw."""
    family = SubsetFamily(classes)
    code = family.code_of(list(cfg.generate.task))
    held_out = family.split(cfg.task.family).held_out
    if scored and code not in held_out:
        named = ", ".join(str(family.classes_of(each)).replace(" ", "") for each in held_out[:5])
        raise ConfigError(
            f"generate.task={list(cfg.generate.task)} is not one of the split's held-out tasks: "
            f"the evaluate stage scores held-out tasks only. Name a held-out task ({named}"
            f"{', ...' if len(held_out) > 5 else ''}), leave generate.task unset, or run "
            "stage=generate alone for a training task"
        )


def has_family(cfg) -> bool:
    """Whether the config's zoo holds many tasks (task.family.name is set)."""
    return FamilyName(cfg.task.family.name) is not FamilyName.none


def task_family(cfg, classes: int) -> tuple[SubsetFamily, TaskSplit]:
    """The family task.family names, on a dataset of `classes` classes, and its split."""
    family = SubsetFamily(classes)
    return family, family.split(cfg.task.family)


def zoo_size(family_cfg) -> int:
    """Checkpoints in the zoo: every training task x seed x checkpoint."""
    return family_cfg.train_tasks * family_cfg.seeds * family_cfg.checkpoints
