"""The designs by name: the only place that turns `generator.design` into code."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pdiff.config import ConfigError

if TYPE_CHECKING:
    from pdiff.generators.base import Generator

DESIGNS: dict[str, type[Generator]] = {}


def register(cls: type[Generator]) -> type[Generator]:
    """Class decorator: make a Generator subclass selectable as generator=<cls.design>."""
    DESIGNS[cls.design] = cls
    return cls


def design_class(cfg) -> type[Generator]:
    """The Generator class of `cfg.generator.design`, after checking that the config fits it."""
    name = cfg.generator.design
    if name not in DESIGNS:
        raise ConfigError(f"generator.design={name!r} is unknown; allowed: {sorted(DESIGNS)} (generator=NAME)")
    design = DESIGNS[name]
    design.check_config(cfg)
    return design
