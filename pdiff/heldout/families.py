"""Task families (many tasks, each named by a descriptor) and the checks a zoo of many tasks passes
before any work: family=subsets (pdiff.heldout.subsets) and family=variants
(pdiff.heldout.variants)."""

from __future__ import annotations

from pdiff.config import DataName, FamilyName, HeldOutSplit, require
from pdiff.data.datasets import Dataset
from pdiff.errors import ConfigError
from pdiff.heldout.split import EvalSplit, TaskSplit
from pdiff.heldout.subsets import SubsetFamily
from pdiff.heldout.variants import VariantFamily

TaskFamily = SubsetFamily | VariantFamily


def family_of(cfg, classes: int) -> TaskFamily:
    """The family task.family.name names, on a dataset of `classes` classes (subsets)."""
    if FamilyName(cfg.task.family.name) is FamilyName.variants:
        return VariantFamily(cfg.data.mnist1d, cfg.data.root, int(cfg.task.family.task_samples))
    return SubsetFamily(classes)


def task_family(cfg, classes: int) -> tuple[TaskFamily, TaskSplit]:
    """The family and its split (family.split_seed, or the run's seed when unset)."""
    family = family_of(cfg, classes)
    return family, family.split(cfg.task.family, int(cfg.seed))


def check_family_counts(family_cfg) -> None:
    """ConfigError for a count of task.family that makes no zoo (checked first: task.param.k follows
    from them)."""
    cfg = family_cfg
    require(cfg.train_tasks >= 2, "task.family.train_tasks", cfg.train_tasks, "must be >= 2")
    require(cfg.held_out >= 1, "task.family.held_out", cfg.held_out, "must be >= 1")
    require(cfg.val_tasks >= 1, "task.family.val_tasks", cfg.val_tasks, "must be >= 1")
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
    sweep = [int(steps) for steps in cfg.finetune_steps]
    require(
        bool(sweep) and sweep == sorted(set(sweep)) and sweep[0] >= 0,
        "task.family.finetune_steps",
        list(cfg.finetune_steps),
        "must be distinct step counts >= 0 in increasing order, e.g. [0, 10, 30, 100]",
    )
    try:
        EvalSplit(cfg.eval_split)
    except ValueError:
        raise ConfigError(
            f"task.family.eval_split={cfg.eval_split!r} is invalid; allowed: val (validation "
            "tasks, choosing settings), test (test tasks, scored once)"
        ) from None


def check_family(cfg, data: Dataset) -> None:
    """ConfigError for a task.family that cannot make its split (checked before any work)."""
    task_cfg, family_cfg = cfg.task, cfg.task.family
    check_family_counts(family_cfg)
    require(
        task_cfg.param.k == zoo_size(family_cfg),
        "task.param.k",
        task_cfg.param.k,
        "a zoo of many tasks holds task.family.train_tasks x seeds x checkpoints = "
        f"{zoo_size(family_cfg)} checkpoints: set task.param.k to that",
    )
    require(
        list(task_cfg.param.layers) == ["*"],
        "task.param.layers",
        list(task_cfg.param.layers),
        "a zoo of many tasks generates whole networks: ['*']",
    )
    require(
        task_cfg.collect.runs <= family_cfg.train_tasks * family_cfg.seeds,
        "task.collect.runs",
        task_cfg.collect.runs,
        f"must be <= task.family.train_tasks x seeds = "
        f"{family_cfg.train_tasks * family_cfg.seeds} (a run trains whole tasks)",
    )
    if FamilyName(family_cfg.name) is FamilyName.variants:
        _check_variants(cfg)
    else:
        _check_subsets(family_cfg, data.num_classes)
    task_family(cfg, data.num_classes)


def _check_subsets(family_cfg, classes: int) -> None:
    require(classes >= 3, "data", f"{classes} classes", "a subsets family needs at least 3 classes")
    pair = [int(c) for c in family_cfg.pair]
    require(
        len(pair) == 2 and pair[0] != pair[1] and all(0 <= c < classes for c in pair),
        "task.family.pair",
        list(family_cfg.pair),
        f"must be two different classes in [0, {classes - 1}]",
    )
    held = family_cfg.held_out + family_cfg.val_tasks
    if HeldOutSplit(family_cfg.split) is HeldOutSplit.pair:
        limit, why = 2 ** (classes - 2), f"distinct codes (no complements) separate classes {pair}"
    else:
        limit, why = (2**classes - 2) // 2, "distinct codes without their complements"
    require(
        held <= limit,
        "task.family.held_out + val_tasks",
        held,
        f"at most {limit}: {why}",
    )


def _check_variants(cfg) -> None:
    family_cfg = cfg.task.family
    require(
        DataName(cfg.data.name) is DataName.mnist1d,
        "data.name",
        DataName(cfg.data.name).value,
        "family=variants makes MNIST-1D datasets: data=mnist1d",
    )
    require(
        family_cfg.task_samples >= 400,
        "task.family.task_samples",
        family_cfg.task_samples,
        "must be >= 400 (a task's signals: 3/8 train, 1/8 validate, 1/2 test)",
    )
    family = VariantFamily(cfg.data.mnist1d, cfg.data.root, int(family_cfg.task_samples))
    inside = sum(family.inside(task) for task in range(len(family.universe)))
    wanted = family_cfg.train_tasks + -(-family_cfg.val_tasks // 2) + -(-family_cfg.held_out // 2)
    require(
        wanted <= inside,
        "task.family.train_tasks",
        family_cfg.train_tasks,
        f"with the held-out tasks inside the range it needs {wanted} tasks inside; the universe "
        f"holds {inside}",
    )


def check_generate_task(cfg, classes: int, scored: bool) -> None:
    """ConfigError unless generate.task names a task of the family; when the run evaluates it
    (`scored`), one of the tasks task.family.eval_split scores: the evaluation scores a task
    against the zoo it never saw."""
    family, split = task_family(cfg, classes)
    if not isinstance(family, SubsetFamily):
        raise ConfigError(
            f"generate.task={list(cfg.generate.task)} is invalid for family="
            f"{family.name}: generate.task names a subset's classes (family=subsets); a "
            "variants run generates for its held-out tasks"
        )
    code = family.code_of(list(cfg.generate.task))
    scored_tasks = split.scored(EvalSplit(cfg.task.family.eval_split))
    if scored and code not in scored_tasks:
        named = ", ".join(
            str(family.classes_of(each)).replace(" ", "") for each in scored_tasks[:5]
        )
        raise ConfigError(
            f"generate.task={list(cfg.generate.task)} is not one of the split's "
            f"{cfg.task.family.eval_split} tasks: the evaluate stage scores those only. Name one "
            f"({named}{', ...' if len(scored_tasks) > 5 else ''}), leave generate.task unset, or "
            "run stage=generate alone for another task"
        )


def has_family(cfg) -> bool:
    """Whether the config's zoo holds many tasks (task.family.name is set)."""
    return FamilyName(cfg.task.family.name) is not FamilyName.none


def zoo_size(family_cfg) -> int:
    """Checkpoints in the zoo: every training task x seed x checkpoint."""
    return family_cfg.train_tasks * family_cfg.seeds * family_cfg.checkpoints
