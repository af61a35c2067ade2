"""The checks of the trainer (plain or DeepSpeed) and of what the jobs ask SLURM for (cluster.*, a
Hydra launcher's settings): settings that need DeepSpeed, ZeRO-3 or a GPU say so before any work."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig

from .generator_schema import TrainerName
from .require import require
from .task_schema import Precision


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
            f"must be less than the time limit, {key_of('timeout_min')}={timeout_min} min "
            f"({60 * timeout_min} s): "
            "a job would be signalled to requeue as soon as it starts",
        )
