"""The root schema behind the Hydra YAML tree, and the run's own settings: stage, device, seed,
logging, the SLURM cluster and the output folder.

The groups no single design owns have their schemas beside it (task_schema.py, generator_schema.py,
evaluate_schema.py); a design's own schemas (its autoencoder, denoiser, sampler, DDPM) live with
the design, in pdiff/generators/."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

from .evaluate_schema import EvaluateConfig
from .generator_schema import GenerateConfig, TrainerConfig
from .task_schema import DataConfig, TaskConfig

SEED_MAX = (
    2**63 - 1
)  # torch's generators take seeds up to 2**64 - 1; pdiff's seeds stay in [0, 2**63 - 1]


class Stage(Enum):
    collect = "collect"
    train = "train"
    generate = "generate"
    evaluate = "evaluate"
    all = "all"


class DeviceName(Enum):
    auto = "auto"  # a GPU when the job sees one, else the CPU
    cpu = "cpu"
    cuda = "cuda"


class LoggerName(Enum):
    jsonl = "jsonl"
    wandb = "wandb"


class WandbMode(Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class LoggerConfig:
    name: LoggerName = LoggerName.jsonl
    project: str = "pdiff"
    entity: str | None = None
    mode: WandbMode = WandbMode.offline
    init_timeout_s: int = 30
    group: str | None = (
        None  # W&B group; a multirun sets it to its sweep folder, so its runs show together
    )
    run_name: str | None = (
        None  # W&B run name; a multirun: the point's overrides (e.g. seed=1); else the folder
    )
    tags: list[str] = field(
        default_factory=list
    )  # added to the task's name and the generator design


@dataclass
class ClusterConfig:
    """Where and how the job chain runs on SLURM (launch/submit.py)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    timeout_min: int = 60
    cpus_per_task: int = 2
    gpus_per_node: int | None = (
        None  # GPUs of the training job's node; every other GPU job asks for one
    )
    gpu_jobs: list[str] = field(
        default_factory=list
    )  # chain jobs that ask for GPUs: base, collect, train, report
    mem_gb: int = 4
    array_parallelism: int = 8
    tasks_per_node: int = (
        1  # ranks of the training job (trainer=deepspeed); other jobs run one task
    )
    nodes: int = 1  # nodes of the training job (trainer=deepspeed); other jobs run on one
    max_array_size: int | None = None  # None: read MaxArraySize from the cluster
    max_requeues: int = 3  # resubmissions after preemption or time limit (jobs resume from disk)
    signal_delay_s: int = (
        120  # SLURM signals a job this long before its time limit: it checkpoints and requeues
    )
    wait: bool = False  # follow the chain to its end and print the report summary


@dataclass
class PathsConfig:
    output_dir: str = MISSING


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generator: Any = MISSING  # GeneratorConfig or a design's own schema (config group generator)
    # one of the AutoencoderConfig schemas (config group ae; read by the designs that use one)
    ae: Any = MISSING
    # ConvDenoiserConfig, WindowDenoiserConfig or VelocityConfig (config group denoiser)
    denoiser: Any = MISSING
    diffusion: Any = (
        MISSING  # the DDPM's schedule and training (config group diffusion; latent and token)
    )
    sampler: Any = (
        MISSING  # DDPMSamplerConfig, DDIMSamplerConfig or FlowSamplerConfig (config group sampler)
    )
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    stage: Stage = Stage.all
    device: DeviceName = (
        DeviceName.auto
    )  # resolved inside each job (pdiff.training.devices), never at submit time
    deterministic: bool = (
        True  # GPU: deterministic kernels (bit-exact resume); false: cudnn autotuning
    )
    seed: int = 0
    threads: int = 0  # 0: leave torch's default
    # set by the entry point, not by hand: the command-line overrides this run never reads
    # (pdiff.pipeline.unread)
    ignored_overrides: list[str] = field(default_factory=list)
