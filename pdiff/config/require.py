"""The one way a configuration check refuses a value: ConfigError naming the key, its value and
the rule."""

from __future__ import annotations

from typing import Any

from pdiff.errors import ConfigError


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """ConfigError naming `key`, its `value` and the rule, unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")
