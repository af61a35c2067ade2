"""The checks of the generator's training and sampling (generator.*, denoiser.compile, sampler.*,
generate.*) that no single design owns; a design checks its own values (Generator.check_config)."""

from __future__ import annotations

from omegaconf import DictConfig

from .generator_schema import SamplerName, TrainerName
from .require import require


def validate_generator(cfg: DictConfig) -> None:
    """What every design is trained on and how its models are generated."""
    require(cfg.generate.n >= 1, "generate.n", cfg.generate.n, "must be >= 1")
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
        f"cannot be combined with generate.target_quantile={quantile} (set by the command line or "
        "by the generator preset): give one of them, e.g. generate.target_quantile=null",
    )
