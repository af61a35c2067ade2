"""The typed schemas behind the Hydra YAML tree: the root config and every group no single design
owns.

A design's own schemas (its autoencoder, denoiser, sampler, DDPM) live with the design, in
pdiff/generators/."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

SEED_MAX = (
    2**63 - 1
)  # torch's generators take seeds up to 2**64 - 1; pdiff's seeds stay in [0, 2**63 - 1]
NUMPY_SEED_MAX = (
    2**32 - 1
)  # numpy's legacy RandomState (MNIST-1D's generator) takes seeds up to 2**32 - 1


class Stage(Enum):
    collect = "collect"
    train = "train"
    generate = "generate"
    evaluate = "evaluate"
    all = "all"


class DataName(Enum):
    digits = "digits"
    npz = "npz"
    mnist = "mnist"
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    mnist1d = "mnist1d"


class DeviceName(Enum):
    auto = "auto"  # a GPU when the job sees one, else the CPU
    cpu = "cpu"
    cuda = "cuda"


class Normalization(Enum):
    per_tensor = "per_tensor"
    per_coordinate = "per_coordinate"


class SamplerName(Enum):
    ddpm = "ddpm"
    ddim = "ddim"
    euler = "euler"  # flow matching
    heun = "heun"


class LoggerName(Enum):
    jsonl = "jsonl"
    wandb = "wandb"


class TrainerName(Enum):
    plain = "plain"
    deepspeed = "deepspeed"


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class WandbMode(Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class ParamConfig:
    layers: list[str] = field(default_factory=lambda: ["bn3", "bn4"])
    k: int = 200
    # true: each vector also carries the running mean and variance of every selected BatchNorm layer
    # (as its checkpoint had them), so runs trained from scratch keep their own statistics and
    # generators generate them
    statistics: bool = False


@dataclass
class SGDConfig:
    epochs: int = 30
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    milestones: list[int] = field(
        default_factory=list
    )  # epochs where lr *= gamma (p-diff); empty: cosine decay
    gamma: float = 0.1


@dataclass
class CollectConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    steps_per_checkpoint: int = 0  # 0: one epoch per checkpoint, as in p-diff
    save_state_every: int = 10  # checkpoints between resume points
    # independent collection runs (K/R checkpoints each; one SLURM array task each): for a layer
    # subset they share the base model and differ in data order; for whole models each run also
    # trains its own from scratch
    runs: int = 1
    align: bool = False  # whole models from several runs: permute each run's hidden units onto run 0 (Git Re-Basin)


class FamilyName(Enum):
    none = "none"  # one task: the zoo's checkpoints all solve task.name
    subsets = "subsets"  # binary class-subset tasks of the data's classes: descriptor = the subset's bit code


class HeldOutSplit(Enum):
    complement = "complement"  # held-out codes drawn at random; neither they nor their complements are trained on
    pair = "pair"  # held out: codes that separate family.pair's two classes; trained: codes that never do


@dataclass
class FamilyConfig:
    """A zoo of many tasks (weights for tasks the zoo never saw): which tasks it trains on, which it
    holds out."""

    name: FamilyName = FamilyName.none
    split: HeldOutSplit = HeldOutSplit.complement
    split_seed: int = 0  # which tasks are held out and which are trained on
    train_tasks: int = 200
    held_out: int = 20
    seeds: int = 1  # runs per training task (own head initialisation and data order each)
    pair: list[int] = field(
        default_factory=lambda: [0, 1]
    )  # split=pair: the two classes held-out tasks separate
    epochs: int = 6  # SGD epochs on a task's labels before its first checkpoint
    checkpoints: int = 5  # checkpoints per (task, seed), one epoch apart
    eval_split: str = (
        "test"  # where the evaluate stage scores held-out tasks: test, or val (choosing settings)
    )
    k_nearest: int = 5  # the average-of-k-nearest-tasks baseline


@dataclass
class TaskConfig:
    name: str = MISSING
    # {_target_: package.module.Class, **kwargs}: called with input_shape and num_classes added
    # (pdiff.data.tasknets)
    net: Any = field(default_factory=lambda: {"_target_": "pdiff.data.tasknets.digits_cnn"})
    param: ParamConfig = field(default_factory=ParamConfig)
    base: SGDConfig = field(default_factory=SGDConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    precision: Precision = (
        Precision.fp32
    )  # bf16: autocast for base training, collection and evaluation
    compile: bool = (
        False  # torch.compile the network's training forward (base training and collection)
    )
    family: FamilyConfig = field(default_factory=FamilyConfig)


@dataclass
class Mnist1dConfig:
    """MNIST-1D's generation arguments (the rest are the package's defaults); seed 42 is the
    published set."""

    num_samples: int = (
        5000  # the published set (seed 42): its 4,000 training signals are the training set
    )
    train_split: float = 0.8
    seed: int = 42
    # validation and test are generated apart from the training data (same generator of signals,
    # other seeds)
    val_samples: int = 4000
    val_seed: int = 1042
    test_samples: int = 16000
    test_seed: int = 2042


@dataclass
class DataConfig:
    name: DataName = DataName.digits
    root: str | None = None  # torchvision data; MNIST-1D's cache (unset: ~/.cache/pdiff)
    path: str | None = None
    augment: bool = False  # random crop (zero padding 4) and horizontal flip of training images
    rotate_degrees: float = (
        0.0  # with augment: also a random rotation in [-d, d] degrees (p-diff's CIFAR-100)
    )
    eval_batch_size: int = 1000
    # validation carved from the training arrays (digits, npz, torchvision): stratified per class,
    # drawn with split_seed (fixed, not the run's seed, so every run and every design sees the same
    # split)
    val_fraction: float = 0.15
    split_seed: int = 0
    mnist1d: Mnist1dConfig = field(default_factory=Mnist1dConfig)


@dataclass
class OptimConfig:
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 2e-6
    batch_size: int = 200
    warmup_steps: int = 100


@dataclass
class CadenceConfig:
    """How often a training loop logs and writes a resume point (steps)."""

    log_every: int = 50
    save_every: int = 500


@dataclass
class GeneratorConfig:
    design: str = "latent"  # a name in pdiff.generators.DESIGNS
    train_fraction: float = (
        1.0  # train on this best fraction of the zoo by validation accuracy (1.0: every checkpoint)
    )


@dataclass
class TrainerConfig:
    """How the autoencoder and the denoiser are optimised: one plain process, or DeepSpeed on N
    ranks."""

    name: TrainerName = TrainerName.plain
    zero_stage: int = 0  # DeepSpeed ZeRO stage 0-3
    grad_accum: int = (
        1  # micro-batches per optimiser step; global batch = micro x ranks x grad_accum
    )
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    precision: Precision = Precision.fp32
    offload_optimizer: bool = False  # ZeRO-Offload: optimiser state in CPU memory
    offload_params: bool = False  # ZeRO-3 parameter offload to CPU memory
    keep_checkpoints: int = 1  # DeepSpeed checkpoints kept per model (older ones are deleted)


@dataclass
class GenerateConfig:
    n: int = 200
    target_acc: float | None = (
        None  # a design conditioned on the checkpoints' accuracies aims here (percent)
    )
    target_quantile: float | None = (
        None  # or at this quantile of the zoo's accuracies (1.0: its best checkpoint)
    )
    guidance: float = (
        1.0  # classifier-free guidance scale: 1 is the conditional model, > 1 pushes further
    )
    # a zoo of many tasks: generate for this task's descriptor (a subset's classes, e.g. [0, 3, 7]);
    # unset: n models for every held-out task (and as many for random descriptors, a control)
    task: list[float] | None = None


@dataclass
class BaselinesConfig:
    """The memorisation baselines of Zeng et al. (2025), drawn in the zoo's per-tensor z-scores."""

    # originals + N(0, s^2): the noise frontier of accuracy vs. similarity (p-diff's published
    # 0.001, 0.05, 0.15 included); plus the scale matching the generated models' distance
    noise_scales: list[float] = field(
        default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.15, 0.3, 0.6, 1.0]
    )
    models_per_scale: int = (
        20  # models per frontier scale, the matched one included (the others: generate.n)
    )
    average_of: int = (
        16  # originals per model of the average<m> baseline (and of selected_average<m>: the best)
    )
    # selection controls: the top 1 and the top q of the originals by validation accuracy, exact
    # copies
    selected_fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25])
    selected_noise_fraction: float = (
        0.1  # the second noise frontier perturbs the top 10% by validation
    )


@dataclass
class BootstrapConfig:
    """95% intervals of every accuracy margin: a paired bootstrap over test samples and the models
    of each population (the same resampled test samples for every population)."""

    resamples: int = 1000
    confidence: float = 0.95


@dataclass
class EvaluateConfig:
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    # > 0: before testing, every model's (every population's) BatchNorm running statistics are
    # re-estimated on this many batches of training data (data.eval_batch_size rows each, a fixed
    # seeded choice)
    recalibrate_batches: int = 0
    chunk_size: int = 100
    batched: bool = (
        False  # vmap the tail over chunks of models (GPU); per model is faster on CPU (measured)
    )


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
    ae: Any = MISSING  # one of the AutoencoderConfig schemas (config group ae; read by the designs that use one)
    denoiser: Any = MISSING  # ConvDenoiserConfig, WindowDenoiserConfig or VelocityConfig (config group denoiser)
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
