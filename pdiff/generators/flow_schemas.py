"""The flow design's config schemas (generator=flow): its generator node, the velocity network
(denoiser=velocity) and the Euler / Heun samplers."""

from __future__ import annotations

from dataclasses import dataclass, field

from pdiff.config import CadenceConfig, GeneratorConfig, Normalization, OptimConfig, SamplerName


@dataclass
class FlowGeneratorConfig(GeneratorConfig):
    """Weight-space flow matching: no autoencoder; the flow runs on the normalised vectors or their
    PCA basis."""

    design: str = "flow"
    normalization: Normalization = Normalization.per_coordinate
    pca_components: int = (
        0  # 0: the flow sees the normalised vectors; k: their top-k PCA coefficients, whitened
    )
    condition: bool = False  # condition on each checkpoint's accuracy (classifier-free guidance; generate.target_acc)
    condition_dropout: float = 0.1  # fraction of training rows that see the null condition
    # a zoo of many tasks (a one-task zoo has no descriptor and never reads it): the flow models
    # each row's residual from a ridge map of its task's descriptor onto the flow's coordinates
    # (pdiff.heldout.ridge)
    descriptor_map: bool = False
    # how the velocity network (denoiser=velocity) trains: its own budget, cadence and EMA
    optim: OptimConfig = field(default_factory=OptimConfig)
    cadence: CadenceConfig = field(default_factory=CadenceConfig)
    ema_decay: float = 0.999


@dataclass
class VelocityConfig:
    """The flow design's velocity network: a residual MLP with time (and condition) embedded in
    every block."""

    name: str = "velocity"
    width: int = 256
    depth: int = 3
    time_dim: int = 128
    compile: bool = False  # torch.compile the network's training forward (trainer=plain); sampling runs it eagerly


@dataclass
class FlowSamplerConfig:
    name: SamplerName = SamplerName.euler  # euler, or heun (two velocity calls a step)
    steps: int = 50
    temperature: float = (
        1.0  # the starting noise's standard deviation (< 1: samples nearer the flow's modes)
    )
