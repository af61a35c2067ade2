"""The checks of the task's settings (task.*) and its data's (data.*) that a schema cannot
express."""

from __future__ import annotations

from omegaconf import DictConfig

from .require import require
from .schema import SEED_MAX
from .task_schema import NUMPY_SEED_MAX, Precision


def validate_task(cfg: DictConfig) -> None:
    """The parameters generated, the base model's training and the zoo's collection."""
    k = cfg.task.param.k
    require(
        k >= 2,
        "task.param.k",
        k,
        "must be an integer >= 2 (the report compares each original with its "
        "nearest other original)",
    )
    require(
        len(cfg.task.param.layers) > 0,
        "task.param.layers",
        list(cfg.task.param.layers),
        "must list at least one layer name or pattern ('*' selects all parameters)",
    )
    require(
        1 <= cfg.task.collect.runs <= k,
        "task.collect.runs",
        cfg.task.collect.runs,
        f"must be in [1, task.param.k={k}]",
    )
    require(
        Precision(cfg.task.precision) is not Precision.fp16,
        "task.precision",
        "fp16",
        "is not offered for the task network (no loss scaling): use bf16 or fp32",
    )
    require(cfg.task.base.epochs >= 0, "task.base.epochs", cfg.task.base.epochs, "must be >= 0")
    milestones = list(cfg.task.base.milestones)
    require(
        milestones == sorted(set(milestones))
        and all(0 < m <= cfg.task.base.epochs for m in milestones),
        "task.base.milestones",
        milestones,
        f"must be increasing epochs in [1, task.base.epochs={cfg.task.base.epochs}]",
    )
    for key, value in (
        ("task.base.batch_size", cfg.task.base.batch_size),
        ("task.collect.batch_size", cfg.task.collect.batch_size),
    ):
        require(value >= 1, key, value, "must be >= 1")
    require(
        cfg.task.collect.steps_per_checkpoint >= 0,
        "task.collect.steps_per_checkpoint",
        cfg.task.collect.steps_per_checkpoint,
        "must be >= 0 (0 means one epoch)",
    )
    require(
        cfg.task.collect.save_state_every >= 1,
        "task.collect.save_state_every",
        cfg.task.collect.save_state_every,
        "must be >= 1",
    )


def validate_data(cfg: DictConfig) -> None:
    """The validation split, MNIST-1D's generation, the evaluation batch and the augmentation."""
    require(
        0 <= cfg.data.split_seed <= SEED_MAX,
        "data.split_seed",
        cfg.data.split_seed,
        "must be an integer in [0, 2**63 - 1]",
    )
    mnist1d = cfg.data.mnist1d
    for key in ("seed", "val_seed", "test_seed"):
        require(
            0 <= mnist1d[key] <= NUMPY_SEED_MAX,
            f"data.mnist1d.{key}",
            mnist1d[key],
            "must be an integer in [0, 2**32 - 1] (numpy's generator of MNIST-1D signals)",
        )
    require(
        mnist1d.num_samples >= 20, "data.mnist1d.num_samples", mnist1d.num_samples, "must be >= 20"
    )
    require(
        0.0 < mnist1d.train_split < 1.0,
        "data.mnist1d.train_split",
        mnist1d.train_split,
        "must be in (0, 1)",
    )
    for key in ("val_samples", "test_samples"):
        require(mnist1d[key] >= 10, f"data.mnist1d.{key}", mnist1d[key], "must be >= 10")
    require(
        len({mnist1d.seed, mnist1d.val_seed, mnist1d.test_seed}) == 3,
        "data.mnist1d.val_seed/test_seed",
        (mnist1d.val_seed, mnist1d.test_seed),
        f"must differ from each other and from data.mnist1d.seed="
        f"{mnist1d.seed}: the same seed would repeat the training signals",
    )
    require(
        0.0 < cfg.data.val_fraction < 1.0,
        "data.val_fraction",
        cfg.data.val_fraction,
        "must be in (0, 1): the share of each class's training samples held out for validation",
    )
    require(
        cfg.data.eval_batch_size >= 1,
        "data.eval_batch_size",
        cfg.data.eval_batch_size,
        "must be >= 1",
    )
    require(
        0.0 <= cfg.data.rotate_degrees <= 180.0,
        "data.rotate_degrees",
        cfg.data.rotate_degrees,
        "must be in [0, 180]",
    )
