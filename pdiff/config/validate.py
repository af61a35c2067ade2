"""The checks a schema cannot express: every one raises ConfigError naming the key, its value and
the rule."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pdiff.errors import ConfigError

from .schema import NUMPY_SEED_MAX, SEED_MAX, FamilyName, Precision, SamplerName, TrainerName


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """ConfigError naming `key`, its `value` and the rule, unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def validate(cfg: DictConfig) -> None:
    """Check the values a schema cannot express; raise ConfigError naming the key."""
    refuse_unknown_keys(cfg)
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
    require(cfg.generate.n >= 1, "generate.n", cfg.generate.n, "must be >= 1")
    require(
        cfg.evaluate.chunk_size >= 1,
        "evaluate.chunk_size",
        cfg.evaluate.chunk_size,
        "must be >= 1 (models per evaluation chunk)",
    )
    require(0 <= cfg.seed <= SEED_MAX, "seed", cfg.seed, "must be an integer in [0, 2**63 - 1]")
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
        cfg.evaluate.recalibrate_batches >= 0,
        "evaluate.recalibrate_batches",
        cfg.evaluate.recalibrate_batches,
        "must be >= 0 (0: no BatchNorm recalibration)",
    )
    if (
        FamilyName(cfg.task.family.name) is FamilyName.none
    ):  # a zoo of many tasks is scored by pdiff.heldout
        validate_baselines(cfg.evaluate, k)
    require(
        cfg.data.eval_batch_size >= 1,
        "data.eval_batch_size",
        cfg.data.eval_batch_size,
        "must be >= 1",
    )
    require(cfg.threads >= 0, "threads", cfg.threads, "must be >= 0 (0: torch's default)")
    require(
        not cfg.denoiser.get("compile") or TrainerName(cfg.trainer.name) is TrainerName.plain,
        "denoiser.compile",
        True,
        "needs trainer=plain (DeepSpeed engines are not compiled by pdiff)",
    )
    if SamplerName(cfg.sampler.name) in (SamplerName.euler, SamplerName.heun):
        require(cfg.sampler.steps >= 1, "sampler.steps", cfg.sampler.steps, "must be >= 1")
        require(
            cfg.sampler.temperature > 0,
            "sampler.temperature",
            cfg.sampler.temperature,
            "must be > 0 (1: the noise the flow was trained from)",
        )
    require(
        0.0 < cfg.generator.train_fraction <= 1.0,
        "generator.train_fraction",
        cfg.generator.train_fraction,
        "must be in (0, 1] (1: train on every checkpoint)",
    )
    validate_generate(cfg.generate)
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
    require(
        0.0 <= cfg.data.rotate_degrees <= 180.0,
        "data.rotate_degrees",
        cfg.data.rotate_degrees,
        "must be in [0, 180]",
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
    require(
        str(cfg.paths.output_dir).strip() != "",
        "paths.output_dir",
        str(cfg.paths.output_dir),
        "must name a folder (empty would write the pipeline into the current folder)",
    )
    output_dir = Path(str(cfg.paths.output_dir)).expanduser()
    require(
        not output_dir.exists() or output_dir.is_dir(),
        "paths.output_dir",
        str(cfg.paths.output_dir),
        "is an existing file; give a folder (new or made by pdiff)",
    )
    validate_trainer(cfg)


def refuse_unknown_keys(node: DictConfig, prefix: str = "") -> None:
    """ConfigError for a key that no schema declares (Hydra's `+key=value` adds one, which pdiff
    would ignore)."""
    schema = OmegaConf.get_type(node)
    declared = {f.name for f in fields(schema)} if is_dataclass(schema) else None
    for key in node:
        path = f"{prefix}{key}"
        if declared is not None and key not in declared:
            close = difflib.get_close_matches(str(key), sorted(declared), n=1)
            hint = (
                f"did you mean {prefix}{close[0]}?"
                if close
                else f"allowed: {', '.join(sorted(declared))}"
            )
            raise ConfigError(
                f"{path} is not a pdiff setting (added with +{path}=..., it would be ignored); {hint}"
            )
        value = node._get_node(key)
        if isinstance(value, DictConfig) and not value._is_missing() and not value._is_none():
            refuse_unknown_keys(value, f"{path}.")


def validate_baselines(evaluate, k: int) -> None:
    """The one-task evaluation's baselines and bootstrap (a zoo of many tasks never reads them)."""
    baselines = evaluate.baselines
    scales = list(baselines.noise_scales)
    require(
        len(set(scales)) >= 2 and len(set(scales)) == len(scales) and all(s > 0 for s in scales),
        "evaluate.baselines.noise_scales",
        scales,
        "needs at least 2 distinct scales, each > 0 (the noise frontier is a curve)",
    )
    require(
        baselines.models_per_scale >= 1,
        "evaluate.baselines.models_per_scale",
        baselines.models_per_scale,
        "must be >= 1",
    )
    require(
        2 <= baselines.average_of <= k,
        "evaluate.baselines.average_of",
        baselines.average_of,
        f"must be in [2, task.param.k={k}] (originals averaged per model)",
    )
    fractions = list(baselines.selected_fractions)
    require(
        all(0.0 < q <= 1.0 for q in fractions) and len(set(fractions)) == len(fractions),
        "evaluate.baselines.selected_fractions",
        fractions,
        "must be distinct fractions in (0, 1]",
    )
    require(
        0.0 < baselines.selected_noise_fraction <= 1.0,
        "evaluate.baselines.selected_noise_fraction",
        baselines.selected_noise_fraction,
        "must be in (0, 1]",
    )
    bootstrap = evaluate.bootstrap
    require(
        bootstrap.resamples >= 100,
        "evaluate.bootstrap.resamples",
        bootstrap.resamples,
        "must be >= 100 (the interval's ends are percentiles of the resamples)",
    )
    require(
        0.5 <= bootstrap.confidence < 1.0,
        "evaluate.bootstrap.confidence",
        bootstrap.confidence,
        "must be in [0.5, 1)",
    )


def validate_generate(generate) -> None:
    """What generation aims at: one of target_acc (a percent) and target_quantile, and a guidance
    scale >= 0."""
    require(generate.guidance >= 0.0, "generate.guidance", generate.guidance, "must be >= 0")
    target, quantile = generate.target_acc, generate.target_quantile
    require(
        target is None or 0.0 <= target <= 100.0,
        "generate.target_acc",
        target,
        "must be an accuracy in [0, 100] (percent)",
    )
    require(
        quantile is None or 0.0 <= quantile <= 1.0,
        "generate.target_quantile",
        quantile,
        "must be in [0, 1]",
    )
    require(
        quantile is None or target is None,
        "generate.target_acc",
        target,
        f"cannot be combined with generate.target_quantile={quantile} (set by the command line or by the "
        "generator preset): give one of them, e.g. generate.target_quantile=null",
    )


def validate_trainer(cfg: DictConfig) -> None:
    """The trainer settings that need DeepSpeed, ZeRO-3 or a GPU say so before any work starts."""
    trainer = cfg.trainer
    deepspeed = TrainerName(trainer.name) is TrainerName.deepspeed
    precision = Precision(trainer.precision)
    require(
        trainer.zero_stage in (0, 1, 2, 3),
        "trainer.zero_stage",
        trainer.zero_stage,
        "must be 0, 1, 2 or 3",
    )
    require(trainer.grad_accum >= 1, "trainer.grad_accum", trainer.grad_accum, "must be >= 1")
    require(
        trainer.grad_clip >= 0,
        "trainer.grad_clip",
        trainer.grad_clip,
        "must be >= 0 (0: no clipping)",
    )
    require(
        trainer.keep_checkpoints >= 1,
        "trainer.keep_checkpoints",
        trainer.keep_checkpoints,
        "must be >= 1",
    )
    for key, needs in (
        ("zero_stage", trainer.zero_stage > 0),
        ("precision", precision is Precision.fp16),
        ("offload_optimizer", trainer.offload_optimizer),
        ("offload_params", trainer.offload_params),
    ):
        require(deepspeed or not needs, f"trainer.{key}", trainer[key], "needs trainer=deepspeed")
    require(
        not trainer.offload_params or trainer.zero_stage == 3,
        "trainer.offload_params",
        trainer.offload_params,
        f"needs trainer.zero_stage=3 (it is {trainer.zero_stage})",
    )
    require(
        not trainer.offload_optimizer or trainer.zero_stage >= 1,
        "trainer.offload_optimizer",
        trainer.offload_optimizer,
        f"needs trainer.zero_stage >= 1 (it is {trainer.zero_stage})",
    )
    cluster = cfg.cluster
    validate_slurm_request(cluster, lambda name: f"cluster.{name}")
    require(
        cluster.tasks_per_node == 1 or deepspeed,
        "cluster.tasks_per_node",
        cluster.tasks_per_node,
        "more than one task per training job needs trainer=deepspeed",
    )
    require(
        cluster.nodes == 1 or deepspeed,
        "cluster.nodes",
        cluster.nodes,
        "a training job on several nodes needs trainer=deepspeed",
    )
    jobs = ("base", "collect", "train", "report")
    require(
        set(cluster.gpu_jobs) <= set(jobs),
        "cluster.gpu_jobs",
        list(cluster.gpu_jobs),
        f"may list {jobs}",
    )
    gpus = cluster.gpus_per_node
    require(gpus is None or gpus >= 0, "cluster.gpus_per_node", gpus, "must be >= 0 (or null)")
    require(
        not cluster.gpu_jobs or bool(gpus),
        "cluster.gpu_jobs",
        list(cluster.gpu_jobs),
        "needs cluster.gpus_per_node >= 1",
    )
    if "train" in cluster.gpu_jobs and gpus:
        require(
            cluster.tasks_per_node <= gpus,
            "cluster.tasks_per_node",
            cluster.tasks_per_node,
            f"must be <= cluster.gpus_per_node={gpus}: each training rank needs its own GPU",
        )


SLURM_RULES: tuple[
    tuple[str, Callable[[int], bool], str], ...
] = (  # (setting, ok, rule) of a SLURM request
    ("nodes", lambda n: n >= 1, "must be >= 1"),
    ("tasks_per_node", lambda n: n >= 1, "must be >= 1"),
    ("cpus_per_task", lambda n: n >= 1, "must be >= 1"),
    ("mem_gb", lambda n: n >= 1, "must be >= 1 (GB per node)"),
    (
        "timeout_min",
        lambda n: n >= 1,
        "must be >= 1 (minutes): SLURM reads 0 or less as no time limit, so the "
        "checkpoint and requeue before the limit would never come",
    ),
    (
        "signal_delay_s",
        lambda n: 0 <= n <= 65535,
        "must be in [0, 65535] (seconds before the time limit)",
    ),
    ("array_parallelism", lambda n: n >= 1, "must be >= 1 (array tasks running at once)"),
    ("max_requeues", lambda n: n >= 0, "must be >= 0"),
    ("max_array_size", lambda n: n >= 1, "must be >= 1 (or null: the cluster's MaxArraySize)"),
)


def validate_slurm_request(settings: Mapping[str, Any], key_of: Callable[[str], str]) -> None:
    """What jobs ask SLURM for (cluster.*, or a Hydra launcher's settings named as in SLURM_RULES)
    by SLURM's own rules; `key_of` gives the key a message names. A setting that is absent or None
    is left to SLURM's default."""
    for name, ok, rule in SLURM_RULES:
        value = settings.get(name)
        if value is not None:
            require(ok(value), key_of(name), value, rule)
    timeout_min, delay = settings.get("timeout_min"), settings.get("signal_delay_s")
    if timeout_min is not None and delay is not None:
        require(
            delay < 60 * timeout_min,
            key_of("signal_delay_s"),
            delay,
            f"must be less than the time limit, {key_of('timeout_min')}={timeout_min} min ({60 * timeout_min} s): "
            "a job would be signalled to requeue as soon as it starts",
        )


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain JSON-able data (enums as their names)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
