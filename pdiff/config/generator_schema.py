"""The schemas of the generator's training and sampling that no single design owns (generator.*,
trainer.*, generate.*); a design's own schemas live with the design, in pdiff/generators/."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .task_schema import Precision


class Normalization(Enum):
    per_tensor = "per_tensor"
    per_coordinate = "per_coordinate"


class SamplerName(Enum):
    ddpm = "ddpm"
    ddim = "ddim"
    euler = "euler"  # flow matching
    heun = "heun"


class TrainerName(Enum):
    plain = "plain"
    deepspeed = "deepspeed"


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
