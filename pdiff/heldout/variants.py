"""family=variants: each task is its own MNIST-1D dataset, made with its own generation settings,
and the descriptor is those settings.

A fixed universe of POOL tasks is drawn once: each task's settings lie in [-OUTER, OUTER] of the
normalised range of SETTINGS (u = -1 and u = +1 are each setting's ends; the published set is
u = 0). Training tasks lie inside the range (every |u| <= 1); held-out tasks lie inside it
(interpolation) and outside it (extrapolation), half each. Every task has the 10 classes, so a
task network keeps the base model's head; the base model is trained on the published set, which is
no task, and it never sees a held-out task's signals or labels.
"""

from __future__ import annotations

import math
from functools import cached_property

import torch

from pdiff.data.datasets import Dataset
from pdiff.data.mnist1d import CLASSES, generation_args, load_signals
from pdiff.heldout.split import TaskSplit, split_seed_of
from pdiff.seeds import Purpose, derive_seed, generator_for

# (MNIST-1D generation argument, its value at u = -1, at u = +1, whether it is an integer)
SETTINGS = (
    ("corr_noise_scale", 0.1, 0.4, False),
    ("shear_scale", 0.25, 1.25, False),
    ("max_translation", 24, 72, True),
)
OUTER = 1.5  # tasks are drawn in [-OUTER, OUTER] per setting; the training range is [-1, 1]
POOL = 1000  # tasks in the universe
UNIVERSE_SEED = 0  # the universe is the family's, the same for every run


class VariantFamily:
    """MNIST-1D datasets of many generation settings; a task is its index in the universe."""

    name = "variants"
    outputs = CLASSES
    symmetric = False

    def __init__(self, mnist1d_cfg, root: str | None, task_samples: int):
        self.mnist1d_cfg, self.root, self.task_samples = mnist1d_cfg, root, task_samples

    @cached_property
    def universe(self) -> torch.Tensor:
        """[POOL, len(SETTINGS)] each task's normalised settings (integer settings rounded first)."""
        draws = torch.rand(
            POOL, len(SETTINGS), generator=generator_for(UNIVERSE_SEED, Purpose.task_variants)
        )
        u = (2 * draws - 1) * OUTER
        for column, (_, low, high, integer) in enumerate(SETTINGS):
            if integer:
                value = torch.round(low + (u[:, column] + 1) / 2 * (high - low))
                u[:, column] = (value - low) / (high - low) * 2 - 1
        return u

    def descriptor(self, tasks: list[int] | torch.Tensor) -> torch.Tensor:
        """[n, len(SETTINGS)] the normalised generation settings of each task."""
        return self.universe[torch.as_tensor(tasks, dtype=torch.int64).view(-1)]

    def settings(self, task: int) -> dict[str, float | int]:
        """Task `task`'s MNIST-1D generation arguments that differ from the published set's."""
        u = self.universe[task]
        values = {}
        for column, (name, low, high, integer) in enumerate(SETTINGS):
            value = low + (float(u[column]) + 1) / 2 * (high - low)
            values[name] = int(round(value)) if integer else round(value, 6)
        return values

    def inside(self, task: int) -> bool:
        """Whether the task lies in the training range (interpolation) or outside it."""
        return bool(self.universe[task].abs().max() <= 1.0)

    def task_data(self, task: int, data: Dataset, with_test: bool = False) -> Dataset:
        """Task `task`'s own signals (family.task_samples of them, its own seed): the first half's
        first three quarters train and last quarter validate; the second half tests, and is left
        out (empty) unless `with_test` (the evaluate stage's, scoring test tasks)."""
        args = generation_args(self.mnist1d_cfg)
        args.update(
            self.settings(task),
            num_samples=self.task_samples,
            train_split=0.5,
            seed=derive_seed(UNIVERSE_SEED, Purpose.task_variants, task) % 2**31,
        )
        x, y = load_signals(args, self.root)
        half = len(y) // 2
        train, end = half * 3 // 4, len(y) if with_test else half
        return Dataset(
            x[:train], y[:train], x[train:half], y[train:half], x[half:end], y[half:end], CLASSES
        )

    def distances(self, task: int, others: list[int], symmetric: bool = False) -> torch.Tensor:
        """Euclidean distance of `task`'s normalised settings to each of `others`' [n] (the family
        has no symmetry)."""
        return torch.cdist(self.descriptor([task]), self.descriptor(others))[0]

    def split(self, family_cfg, seed: int) -> TaskSplit:
        """family.train_tasks training tasks inside the range; family.val_tasks validation and
        family.held_out test tasks, half inside the range and half outside (the inside half
        rounded up); drawn by family.split_seed (the run's seed when unset)."""
        cfg = family_cfg
        order = torch.randperm(
            POOL, generator=generator_for(split_seed_of(cfg, seed), Purpose.task_split)
        )
        inside = [task for task in order.tolist() if self.inside(task)]
        outside = [task for task in order.tolist() if not self.inside(task)]
        val_in, test_in = math.ceil(cfg.val_tasks / 2), math.ceil(cfg.held_out / 2)
        val_out, test_out = cfg.val_tasks - val_in, cfg.held_out - test_in
        train = inside[: cfg.train_tasks]
        val = inside[cfg.train_tasks : cfg.train_tasks + val_in] + outside[:val_out]
        test = (
            inside[cfg.train_tasks + val_in : cfg.train_tasks + val_in + test_in]
            + outside[val_out : val_out + test_out]
        )
        used = set(train) | set(val) | set(test)
        return TaskSplit(sorted(train), val, test, sorted(t for t in range(POOL) if t not in used))

    def split_check(self, stored: list[int], split: TaskSplit, family_cfg) -> dict[str, int]:
        """Counts that must all be 0, from the task ids the zoo stores: held-out tasks trained on,
        or with a training task's very settings; held-out tasks in both val and test; training
        tasks outside the range."""
        trained = sorted(set(stored))
        held, known = self.descriptor(split.held_out), self.descriptor(trained)
        same = (held[:, None, :] == known[None, :, :]).all(-1).any(1)
        return {
            "held_out_in_training": sum(task in set(trained) for task in split.held_out),
            "settings_in_training": int(same.sum()),
            "val_in_test": len(set(split.val) & set(split.test)),
            "outside_range_in_training": sum(not self.inside(task) for task in trained),
        }

    def region(self, task: int, train: list[int]) -> str:
        """The row group of the report's table: inside the training range or outside it."""
        return "inside (interpolation)" if self.inside(task) else "outside (extrapolation)"
