"""The checks a schema cannot express, run before any work: every one raises ConfigError naming the
key, its value and the rule. One module per concern (task_checks, generator_checks, evaluate_checks,
trainer_checks); this one runs them all and checks the run's own settings."""

from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pdiff.errors import ConfigError

from .evaluate_checks import validate_evaluate
from .generator_checks import validate_generator
from .require import require
from .schema import SEED_MAX
from .task_checks import validate_data, validate_task
from .trainer_checks import validate_trainer


def validate(cfg: DictConfig) -> None:
    """Check the values a schema cannot express; raise ConfigError naming the key."""
    refuse_unknown_keys(cfg)
    validate_task(cfg)
    validate_data(cfg)
    validate_generator(cfg)
    validate_evaluate(cfg)
    validate_run(cfg)
    validate_trainer(cfg)


def validate_run(cfg: DictConfig) -> None:
    """The run's own settings: its seed, its threads and its output folder."""
    require(0 <= cfg.seed <= SEED_MAX, "seed", cfg.seed, "must be an integer in [0, 2**63 - 1]")
    require(cfg.threads >= 0, "threads", cfg.threads, "must be >= 0 (0: torch's default)")
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
                f"{path} is not a pdiff setting (added with +{path}=..., it would be ignored); "
                f"{hint}"
            )
        value = node._get_node(key)
        if isinstance(value, DictConfig) and not value._is_missing() and not value._is_none():
            refuse_unknown_keys(value, f"{path}.")


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain JSON-able data (enums as their names)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
