"""The designs by name: the only place that turns `generator.design` into code, and checks a config
against it."""

from __future__ import annotations

import logging

from pdiff.errors import ConfigError
from pdiff.generators.interface import Generator

log = logging.getLogger(__name__)
DESIGNS: dict[str, type[Generator]] = {}


def register(cls: type[Generator]) -> type[Generator]:
    """Class decorator: make a Generator subclass selectable as generator=<cls.design>; its config
    schemas are stored in Hydra's ConfigStore by the entry points (pdiff.entry.register_configs)."""
    DESIGNS[cls.design] = cls
    return cls


def design_of(cfg) -> type[Generator]:
    """The Generator class of `cfg.generator.design` (unchecked: design_class also checks the
    config)."""
    name = cfg.generator.design
    if name not in DESIGNS:
        raise ConfigError(
            f"generator.design={name!r} is unknown; allowed: {sorted(DESIGNS)} (generator=NAME)"
        )
    return DESIGNS[name]


def design_class(cfg) -> type[Generator]:
    """The Generator class of `cfg.generator.design`, after checking that the config fits it."""
    design = design_of(cfg)
    _check_options(design, cfg)
    _check_conditioning(design, cfg)
    design.check_config(cfg)
    return design


def _check_options(design: type[Generator], cfg) -> None:
    """ConfigError when a group option the design uses belongs to another design."""
    for group, allowed in design.uses.items():
        name = getattr(cfg[group].name, "value", cfg[group].name)
        if name not in allowed:
            owners = [other for other, each in DESIGNS.items() if name in each.uses.get(group, ())]
            hint = f" ({group}={name} belongs to generator={owners[0]})" if owners else ""
            raise ConfigError(
                f"{group}={name} does not fit generator={design.design}; allowed: "
                f"{', '.join(f'{group}={option}' for option in allowed)}{hint}"
            )


def _check_conditioning(design: type[Generator], cfg) -> None:
    """generate.target_acc / target_quantile / guidance need a generator trained on the checkpoints'
    accuracies."""
    if design.conditioned(cfg):
        return
    ways = ", ".join(
        f"generator={name} {each.condition_setting}".strip()
        for name, each in DESIGNS.items()
        if each.condition_setting
    )
    why = f"generator={design.design} is not conditioned on accuracy; designs that can be: {ways or 'none'}"
    for key in ("target_acc", "target_quantile"):
        if cfg.generate[key] is not None:
            raise ConfigError(
                f"generate.{key}={cfg.generate[key]} needs a generator trained on the checkpoints' "
                f"accuracies ({why}); or unset it: generate.{key}=null"
            )
    if cfg.generate.guidance != 1.0:
        raise ConfigError(
            f"generate.guidance={cfg.generate.guidance} needs a generator trained on the checkpoints' "
            f"accuracies; leave it at 1.0 ({why})"
        )


def unread_groups(cfg) -> set[str]:
    """The config groups some design reads but this run's design never does (its overrides are
    ignored)."""
    design = design_of(cfg)
    owned = {group for each in DESIGNS.values() for group in (*each.reads, *each.uses)}
    return owned - {*design.reads, *design.uses}
