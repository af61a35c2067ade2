"""Typed config schemas behind the Hydra YAML tree, and the checks Hydra cannot do."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pdiff.errors import ConfigError


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
    # true: each vector also carries the running mean and variance of every selected BatchNorm layer (as its
    # checkpoint had them), so runs trained from scratch keep their own statistics and generators generate them
    statistics: bool = False


@dataclass
class SGDConfig:
    epochs: int = 30
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    milestones: list[int] = field(default_factory=list)  # epochs where lr *= gamma (p-diff); empty: cosine decay
    gamma: float = 0.1


@dataclass
class CollectConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    steps_per_checkpoint: int = 0  # 0: one epoch per checkpoint, as in p-diff
    save_state_every: int = 10  # checkpoints between resume points
    # independent collection runs (K/R checkpoints each; one SLURM array task each): for a layer subset they
    # share the base model and differ in data order; for whole models each run also trains its own from scratch
    runs: int = 1
    align: bool = False  # whole models from several runs: permute each run's hidden units onto run 0 (Git Re-Basin)


@dataclass
class TaskConfig:
    name: str = MISSING
    # {_target_: package.module.Class, **kwargs}: called with input_shape and num_classes added (pdiff.data.tasknets)
    net: Any = field(default_factory=lambda: {"_target_": "pdiff.data.tasknets.digits_cnn"})
    param: ParamConfig = field(default_factory=ParamConfig)
    base: SGDConfig = field(default_factory=SGDConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    precision: Precision = Precision.fp32  # bf16: autocast for base training, collection and evaluation
    compile: bool = False  # torch.compile the network's training forward (base training and collection)


@dataclass
class Mnist1dConfig:
    """MNIST-1D's generation arguments (the rest are the package's defaults); seed 42 is the published set."""

    num_samples: int = 5000  # the published set (seed 42): its 4,000 training signals are the training set
    train_split: float = 0.8
    seed: int = 42
    # validation and test are generated apart from the training data (same generator of signals, other seeds)
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
    rotate_degrees: float = 0.0  # with augment: also a random rotation in [-d, d] degrees (p-diff's CIFAR-100)
    eval_batch_size: int = 1000
    # validation carved from the training arrays (digits, npz, torchvision): stratified per class, drawn with
    # split_seed (fixed, not the run's seed, so every run and every design sees the same split)
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
    train_fraction: float = 1.0  # train on this best fraction of the zoo by validation accuracy (1.0: every checkpoint)


@dataclass
class FlowGeneratorConfig(GeneratorConfig):
    """Weight-space flow matching: no autoencoder; the flow runs on the normalised vectors or their PCA basis."""

    design: str = "flow"
    normalization: Normalization = Normalization.per_coordinate
    pca_components: int = 0  # 0: the flow sees the normalised vectors; k: their top-k PCA coefficients, whitened
    condition: bool = False  # condition on each checkpoint's accuracy (classifier-free guidance; generate.target_acc)
    condition_dropout: float = 0.1  # fraction of training rows that see the null condition
    # how the velocity network (denoiser=velocity) trains: its own budget, cadence and EMA
    optim: OptimConfig = field(default_factory=OptimConfig)
    cadence: CadenceConfig = field(default_factory=CadenceConfig)
    ema_decay: float = 0.999


@dataclass
class AutoencoderConfig:
    """What every parameter autoencoder has: normalisation, p-diff's two noises, its optimisation."""

    name: str = MISSING
    normalization: Normalization = Normalization.per_coordinate
    input_noise: float = 0.001
    latent_noise: float = 0.1
    optim: OptimConfig = field(default_factory=OptimConfig)
    cadence: CadenceConfig = field(default_factory=CadenceConfig)


@dataclass
class MLPAutoencoderConfig(AutoencoderConfig):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512, 256])
    latent_dim: int = 64  # values in the latent, seen as [latent_channels, latent_dim / latent_channels]
    latent_channels: int = 4


@dataclass
class ConvV1AutoencoderConfig(AutoencoderConfig):
    name: str = "pdiff_v1"
    normalization: Normalization = Normalization.per_tensor
    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256])
    latent_channels: int = 4
    stride: int = 2


@dataclass
class ConvV2AutoencoderConfig(AutoencoderConfig):
    name: str = "pdiff_v2"
    normalization: Normalization = Normalization.per_tensor
    fold: int = 64
    channels: list[int] = field(default_factory=lambda: [128, 256])
    latent_dim: int = 128


@dataclass
class TokenAutoencoderConfig(AutoencoderConfig):
    name: str = "token"
    normalization: Normalization = Normalization.per_tensor
    token_size: int = 64
    token_latent_dim: int = 8  # latent values per token
    embed_dim: int = 64
    hidden: list[int] = field(default_factory=lambda: [256, 256])


@dataclass
class ConvDenoiserConfig:
    """p-diff's latent denoiser: 1-D conv encoder-decoder with additive skips."""

    name: str = "conv1d"
    channels: list[int] = field(default_factory=lambda: [32, 64])
    time_dim: int = 128
    compile: bool = False  # torch.compile the denoiser for training (trainer=plain) and sampling


@dataclass
class WindowDenoiserConfig:
    """The token design's denoiser: a pre-norm transformer over windows of token latents."""

    name: str = "window"
    window: int = 64  # token latents per window
    width: int = 128
    depth: int = 2
    heads: int = 4
    time_dim: int = 128
    compile: bool = False  # torch.compile the denoiser for training (trainer=plain) and sampling


@dataclass
class VelocityConfig:
    """The flow design's velocity network: a residual MLP with time (and condition) embedded in every block."""

    name: str = "velocity"
    width: int = 256
    depth: int = 3
    time_dim: int = 128
    compile: bool = False  # torch.compile the network's training forward (trainer=plain); sampling runs it eagerly


@dataclass
class DiffusionConfig:
    """The DDPM schedule, the EMA of the denoiser and how the denoiser is optimised (generator=latent|token)."""

    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    ema_decay: float = 0.999
    optim: OptimConfig = field(default_factory=OptimConfig)
    cadence: CadenceConfig = field(default_factory=CadenceConfig)


@dataclass
class DDPMSamplerConfig:
    name: SamplerName = SamplerName.ddpm  # ancestral sampling over all diffusion.timesteps


@dataclass
class DDIMSamplerConfig:
    name: SamplerName = SamplerName.ddim
    steps: int = 60
    eta: float = 0.0


@dataclass
class FlowSamplerConfig:
    name: SamplerName = SamplerName.euler  # euler, or heun (two velocity calls a step)
    steps: int = 50
    temperature: float = 1.0  # the starting noise's standard deviation (< 1: samples nearer the flow's modes)


@dataclass
class TrainerConfig:
    """How the autoencoder and the denoiser are optimised: one plain process, or DeepSpeed on N ranks."""

    name: TrainerName = TrainerName.plain
    zero_stage: int = 0  # DeepSpeed ZeRO stage 0-3
    grad_accum: int = 1  # micro-batches per optimiser step; global batch = micro x ranks x grad_accum
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    precision: Precision = Precision.fp32
    offload_optimizer: bool = False  # ZeRO-Offload: optimiser state in CPU memory
    offload_params: bool = False  # ZeRO-3 parameter offload to CPU memory
    keep_checkpoints: int = 1  # DeepSpeed checkpoints kept per model (older ones are deleted)


@dataclass
class GenerateConfig:
    n: int = 200
    target_acc: float | None = None  # a design conditioned on the checkpoints' accuracies aims here (percent)
    target_quantile: float | None = None  # or at this quantile of the zoo's accuracies (1.0: its best checkpoint)
    guidance: float = 1.0  # classifier-free guidance scale: 1 is the conditional model, > 1 pushes further


@dataclass
class BaselinesConfig:
    """The memorisation baselines of Zeng et al. (2025), drawn in the zoo's per-tensor z-scores."""

    # originals + N(0, s^2): the noise frontier of accuracy vs. similarity (p-diff's published 0.001, 0.05, 0.15
    # included); plus the scale matching the generated models' distance
    noise_scales: list[float] = field(default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.15, 0.3,
                                                                0.6, 1.0])
    models_per_scale: int = 20  # models per frontier scale, the matched one included (the others: generate.n)
    average_of: int = 16  # originals per model of the average<m> baseline (and of selected_average<m>: the best)
    # selection controls: the top 1 and the top q of the originals by validation accuracy, exact copies
    selected_fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25])
    selected_noise_fraction: float = 0.1  # the second noise frontier perturbs the top 10% by validation


@dataclass
class BootstrapConfig:
    """95% intervals of every accuracy margin: a paired bootstrap over test samples and the models of each
    population (the same resampled test samples for every population)."""

    resamples: int = 1000
    confidence: float = 0.95


@dataclass
class EvaluateConfig:
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    # > 0: before testing, every model's (every population's) BatchNorm running statistics are re-estimated
    # on this many batches of training data (data.eval_batch_size rows each, a fixed seeded choice)
    recalibrate_batches: int = 0
    chunk_size: int = 100
    batched: bool = False  # vmap the tail over chunks of models (GPU); per model is faster on CPU (measured)


@dataclass
class LoggerConfig:
    name: LoggerName = LoggerName.jsonl
    project: str = "pdiff"
    entity: str | None = None
    mode: WandbMode = WandbMode.offline
    init_timeout_s: int = 30
    group: str | None = None  # W&B group; a multirun sets it to its sweep folder, so its runs show together
    run_name: str | None = None  # W&B run name; a multirun: the point's overrides (e.g. seed=1); else the folder
    tags: list[str] = field(default_factory=list)  # added to the task's name and the generator design


@dataclass
class ClusterConfig:
    """Where and how the job chain runs on SLURM (launch/submit.py)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    timeout_min: int = 60
    cpus_per_task: int = 2
    gpus_per_node: int | None = None  # GPUs of the training job's node; every other GPU job asks for one
    gpu_jobs: list[str] = field(default_factory=list)  # chain jobs that ask for GPUs: base, collect, train, report
    mem_gb: int = 4
    array_parallelism: int = 8
    tasks_per_node: int = 1  # ranks of the training job (trainer=deepspeed); other jobs run one task
    nodes: int = 1  # nodes of the training job (trainer=deepspeed); other jobs run on one
    max_array_size: int | None = None  # None: read MaxArraySize from the cluster
    max_requeues: int = 3  # resubmissions after preemption or time limit (jobs resume from disk)
    signal_delay_s: int = 120  # SLURM signals a job this long before its time limit: it checkpoints and requeues
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
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampler: Any = MISSING  # DDPMSamplerConfig, DDIMSamplerConfig or FlowSamplerConfig (config group sampler)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    stage: Stage = Stage.all
    device: DeviceName = DeviceName.auto  # resolved inside each job (pdiff.devices), never at submit time
    deterministic: bool = True  # GPU: deterministic kernels (bit-exact resume); false: cudnn autotuning
    seed: int = 0
    threads: int = 0  # 0: leave torch's default


WHOLE_NODE_KEYS = ("task.net",)  # a dict given for these on the command line replaces the node


def register_configs() -> None:
    """Put the root schema in Hydra's ConfigStore, and every design's schemas (each design stores its own when it
    registers, pdiff.generators.registry), so every YAML file is type-checked against its own."""
    import pdiff.generators  # noqa: F401  (the designs register their schemas on import)

    ConfigStore.instance().store(name="base_config", node=Config)


def whole_node_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides in which `task.net={...}` replaces the node instead of merging into it.

    Hydra merges a dict override into the node it replaces, so the task's own network arguments would stay;
    setting the node to null first makes the dict the whole node.
    """
    out = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") in WHOLE_NODE_KEYS and value.lstrip().startswith("{"):
            out.append(f"{key.lstrip('+')}=null")
        out.append(override)
    return out


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """ConfigError naming `key`, its `value` and the rule, unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def validate(cfg: DictConfig) -> None:
    """Check the values a schema cannot express; raise ConfigError naming the key."""
    refuse_unknown_keys(cfg)
    k = cfg.task.param.k
    require(k >= 2, "task.param.k", k, "must be an integer >= 2 (the report compares each original with its "
            "nearest other original)")
    require(len(cfg.task.param.layers) > 0, "task.param.layers", list(cfg.task.param.layers),
            "must list at least one layer name or pattern ('*' selects all parameters)")
    require(1 <= cfg.task.collect.runs <= k, "task.collect.runs", cfg.task.collect.runs,
            f"must be in [1, task.param.k={k}]")
    require(cfg.generate.n >= 1, "generate.n", cfg.generate.n, "must be >= 1")
    require(cfg.evaluate.chunk_size >= 1, "evaluate.chunk_size", cfg.evaluate.chunk_size,
            "must be >= 1 (models per evaluation chunk)")
    mnist1d = cfg.data.mnist1d
    require(mnist1d.num_samples >= 20, "data.mnist1d.num_samples", mnist1d.num_samples, "must be >= 20")
    require(0.0 < mnist1d.train_split < 1.0, "data.mnist1d.train_split", mnist1d.train_split, "must be in (0, 1)")
    for key in ("val_samples", "test_samples"):
        require(mnist1d[key] >= 10, f"data.mnist1d.{key}", mnist1d[key], "must be >= 10")
    require(len({mnist1d.seed, mnist1d.val_seed, mnist1d.test_seed}) == 3, "data.mnist1d.val_seed/test_seed",
            (mnist1d.val_seed, mnist1d.test_seed), f"must differ from each other and from data.mnist1d.seed="
            f"{mnist1d.seed}: the same seed would repeat the training signals")
    require(0.0 < cfg.data.val_fraction < 1.0, "data.val_fraction", cfg.data.val_fraction,
            "must be in (0, 1): the share of each class's training samples held out for validation")
    baselines = cfg.evaluate.baselines
    scales = list(baselines.noise_scales)
    require(len(set(scales)) >= 2 and len(set(scales)) == len(scales) and all(s > 0 for s in scales),
            "evaluate.baselines.noise_scales", scales, "needs at least 2 distinct scales, each > 0 (the noise "
            "frontier is a curve)")
    require(baselines.models_per_scale >= 1, "evaluate.baselines.models_per_scale", baselines.models_per_scale,
            "must be >= 1")
    require(cfg.evaluate.recalibrate_batches >= 0, "evaluate.recalibrate_batches", cfg.evaluate.recalibrate_batches,
            "must be >= 0 (0: no BatchNorm recalibration)")
    require(2 <= baselines.average_of <= k, "evaluate.baselines.average_of", baselines.average_of,
            f"must be in [2, task.param.k={k}] (originals averaged per model)")
    fractions = list(baselines.selected_fractions)
    require(all(0.0 < q <= 1.0 for q in fractions) and len(set(fractions)) == len(fractions),
            "evaluate.baselines.selected_fractions", fractions, "must be distinct fractions in (0, 1]")
    require(0.0 < baselines.selected_noise_fraction <= 1.0, "evaluate.baselines.selected_noise_fraction",
            baselines.selected_noise_fraction, "must be in (0, 1]")
    bootstrap = cfg.evaluate.bootstrap
    require(bootstrap.resamples >= 100, "evaluate.bootstrap.resamples", bootstrap.resamples,
            "must be >= 100 (the interval's ends are percentiles of the resamples)")
    require(0.5 <= bootstrap.confidence < 1.0, "evaluate.bootstrap.confidence", bootstrap.confidence,
            "must be in [0.5, 1)")
    require(cfg.data.eval_batch_size >= 1, "data.eval_batch_size", cfg.data.eval_batch_size, "must be >= 1")
    require(cfg.threads >= 0, "threads", cfg.threads, "must be >= 0 (0: torch's default)")
    require(not cfg.denoiser.get("compile") or TrainerName(cfg.trainer.name) is TrainerName.plain, "denoiser.compile",
           True, "needs trainer=plain (DeepSpeed engines are not compiled by pdiff)")
    if SamplerName(cfg.sampler.name) in (SamplerName.euler, SamplerName.heun):
        require(cfg.sampler.steps >= 1, "sampler.steps", cfg.sampler.steps, "must be >= 1")
        require(cfg.sampler.temperature > 0, "sampler.temperature", cfg.sampler.temperature,
               "must be > 0 (1: the noise the flow was trained from)")
    require(0.0 < cfg.generator.train_fraction <= 1.0, "generator.train_fraction", cfg.generator.train_fraction,
           "must be in (0, 1] (1: train on every checkpoint)")
    validate_generate(cfg.generate)
    require(Precision(cfg.task.precision) is not Precision.fp16, "task.precision", "fp16",
            "is not offered for the task network (no loss scaling): use bf16 or fp32")
    require(cfg.task.base.epochs >= 0, "task.base.epochs", cfg.task.base.epochs, "must be >= 0")
    milestones = list(cfg.task.base.milestones)
    require(milestones == sorted(set(milestones)) and all(0 < m <= cfg.task.base.epochs for m in milestones),
            "task.base.milestones", milestones,
            f"must be increasing epochs in [1, task.base.epochs={cfg.task.base.epochs}]")
    require(0.0 <= cfg.data.rotate_degrees <= 180.0, "data.rotate_degrees", cfg.data.rotate_degrees,
            "must be in [0, 180]")
    for key, value in (("task.base.batch_size", cfg.task.base.batch_size),
                       ("task.collect.batch_size", cfg.task.collect.batch_size)):
        require(value >= 1, key, value, "must be >= 1")
    require(cfg.task.collect.steps_per_checkpoint >= 0, "task.collect.steps_per_checkpoint",
            cfg.task.collect.steps_per_checkpoint, "must be >= 0 (0 means one epoch)")
    require(cfg.task.collect.save_state_every >= 1, "task.collect.save_state_every",
            cfg.task.collect.save_state_every, "must be >= 1")
    require(str(cfg.paths.output_dir).strip() != "", "paths.output_dir", str(cfg.paths.output_dir),
            "must name a folder (empty would write the pipeline into the current folder)")
    output_dir = Path(str(cfg.paths.output_dir)).expanduser()
    require(not output_dir.exists() or output_dir.is_dir(), "paths.output_dir", str(cfg.paths.output_dir),
            "is an existing file; give a folder (new or made by pdiff)")
    validate_trainer(cfg)


def refuse_unknown_keys(node: DictConfig, prefix: str = "") -> None:
    """ConfigError for a key that no schema declares (Hydra's `+key=value` adds one, which pdiff would ignore)."""
    schema = OmegaConf.get_type(node)
    declared = {f.name for f in fields(schema)} if is_dataclass(schema) else None
    for key in node:
        path = f"{prefix}{key}"
        if declared is not None and key not in declared:
            close = difflib.get_close_matches(str(key), sorted(declared), n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"allowed: {', '.join(sorted(declared))}"
            raise ConfigError(f"{path} is not a pdiff setting (added with +{path}=..., it would be ignored); {hint}")
        value = node._get_node(key)
        if isinstance(value, DictConfig) and not value._is_missing() and not value._is_none():
            refuse_unknown_keys(value, f"{path}.")


def validate_generate(generate) -> None:
    """What generation aims at: one of target_acc (a percent) and target_quantile, and a guidance scale >= 0."""
    require(generate.guidance >= 0.0, "generate.guidance", generate.guidance, "must be >= 0")
    target, quantile = generate.target_acc, generate.target_quantile
    require(target is None or 0.0 <= target <= 100.0, "generate.target_acc", target,
           "must be an accuracy in [0, 100] (percent)")
    require(quantile is None or 0.0 <= quantile <= 1.0, "generate.target_quantile", quantile, "must be in [0, 1]")
    require(quantile is None or target is None, "generate.target_acc", target,
           f"cannot be combined with generate.target_quantile={quantile} (set by the command line or by the "
           "generator preset): give one of them, e.g. generate.target_quantile=null")


def validate_trainer(cfg: DictConfig) -> None:
    """The trainer settings that need DeepSpeed, ZeRO-3 or a GPU say so before any work starts."""
    trainer = cfg.trainer
    deepspeed = TrainerName(trainer.name) is TrainerName.deepspeed
    precision = Precision(trainer.precision)
    require(trainer.zero_stage in (0, 1, 2, 3), "trainer.zero_stage", trainer.zero_stage, "must be 0, 1, 2 or 3")
    require(trainer.grad_accum >= 1, "trainer.grad_accum", trainer.grad_accum, "must be >= 1")
    require(trainer.grad_clip >= 0, "trainer.grad_clip", trainer.grad_clip, "must be >= 0 (0: no clipping)")
    require(trainer.keep_checkpoints >= 1, "trainer.keep_checkpoints", trainer.keep_checkpoints, "must be >= 1")
    for key, needs in (("zero_stage", trainer.zero_stage > 0), ("precision", precision is Precision.fp16),
                       ("offload_optimizer", trainer.offload_optimizer), ("offload_params", trainer.offload_params)):
        require(deepspeed or not needs, f"trainer.{key}", trainer[key], "needs trainer=deepspeed")
    require(not trainer.offload_params or trainer.zero_stage == 3, "trainer.offload_params", trainer.offload_params,
            f"needs trainer.zero_stage=3 (it is {trainer.zero_stage})")
    require(not trainer.offload_optimizer or trainer.zero_stage >= 1, "trainer.offload_optimizer",
            trainer.offload_optimizer, f"needs trainer.zero_stage >= 1 (it is {trainer.zero_stage})")
    cluster = cfg.cluster
    require(cluster.tasks_per_node >= 1, "cluster.tasks_per_node", cluster.tasks_per_node, "must be >= 1")
    require(cluster.tasks_per_node == 1 or deepspeed, "cluster.tasks_per_node", cluster.tasks_per_node,
            "more than one task per training job needs trainer=deepspeed")
    require(cluster.nodes >= 1, "cluster.nodes", cluster.nodes, "must be >= 1")
    require(cluster.nodes == 1 or deepspeed, "cluster.nodes", cluster.nodes,
            "a training job on several nodes needs trainer=deepspeed")
    jobs = ("base", "collect", "train", "report")
    require(set(cluster.gpu_jobs) <= set(jobs), "cluster.gpu_jobs", list(cluster.gpu_jobs), f"may list {jobs}")
    gpus = cluster.gpus_per_node
    require(gpus is None or gpus >= 0, "cluster.gpus_per_node", gpus, "must be >= 0 (or null)")
    require(not cluster.gpu_jobs or bool(gpus), "cluster.gpu_jobs", list(cluster.gpu_jobs),
            "needs cluster.gpus_per_node >= 1")
    if "train" in cluster.gpu_jobs and gpus:
        require(cluster.tasks_per_node <= gpus, "cluster.tasks_per_node", cluster.tasks_per_node,
                f"must be <= cluster.gpus_per_node={gpus}: each training rank needs its own GPU")


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain JSON-able data (enums as their names)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
