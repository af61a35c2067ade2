"""The command line as pdiff reads it, before and around Hydra: the launchers' arguments dropped,
flags turned into overrides, each override parsed or refused with one line, the values given for a
key, the overrides Hydra would merge where pdiff means to replace, and a sweep point's folder name.

The one home of argv and override handling: the entry points (pdiff.entry), the output folder's
check (pdiff.pipeline.output_dir) and the note of unread overrides (pdiff.pipeline.unread) call it.
Not re-exported by pdiff.config, so that importing the schemas does not load Hydra's parser.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep
from hydra.errors import HydraException

from pdiff.errors import ConfigError

WHOLE_NODE_KEYS = ("task.net",)  # a dict given for these on the command line replaces the node
# a file name may hold 255 bytes; what is left is for Hydra's and pdiff's own suffixes
MAX_DIRNAME_BYTES = 200


def strip_launcher_args(argv: list[str]) -> list[str]:
    """argv without the deepspeed launcher's `--local_rank=N` (its value is also in LOCAL_RANK)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--local_rank":
            skip = True
        elif not arg.startswith("--local_rank="):
            out.append(arg)
    return out


def flags_as_overrides(args: list[str], flags: dict[str, str]) -> list[str]:
    """`args` with each flag of `flags` given (e.g. --wait) moved to the end as its override
    (cluster.wait=true)."""
    for flag, override in flags.items():
        if flag in args:
            args = [arg for arg in args if arg != flag] + [override]
    return args


def check_parsable(arguments: list[str]) -> None:
    """ConfigError naming an override Hydra's parser refuses, with the quoting that fixes the usual
    cause."""
    parser = OverridesParser.create()
    for argument in arguments:
        if argument.startswith("-") or "=" not in argument:
            continue
        try:
            parser.parse_override(argument)
        except HydraException as error:
            key, _, value = argument.partition("=")
            detail = str(error).strip().splitlines()[0]
            raise ConfigError(
                f"the override {argument!r} cannot be parsed ({detail}); a value holding non-ASCII "
                "letters, newlines or special characters (=, quotes, brackets) must be quoted: "
                f"'{key}=\"{value}\"'"
            ) from None


def given_values(arguments: list[str], key: str) -> list[Any]:
    """The values `arguments` (the command line after the program) set `key` to: each choice of a
    sweep, none of a range or glob sweep or of a deletion. Flags, arguments that are no override of
    `key` and overrides Hydra's parser refuses (Hydra reports those) give none."""
    parser = OverridesParser.create()
    values = []
    for argument in arguments:
        if not argument.lstrip("+~").startswith(key):
            continue
        try:
            override = parser.parse_override(argument)
        except HydraException:
            continue
        if override.key_or_group != key or override.is_delete():
            continue
        value = override.value()
        if isinstance(value, ChoiceSweep):
            values.extend(value.list)
        elif not override.is_sweep_override():
            values.append(value)
    return values


def override_key(override: str) -> str:
    """The key an override sets: `+data.mnist1d.seed=7` -> `data.mnist1d.seed`."""
    return override.lstrip("+~").split("=")[0]


def whole_node_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides in which `task.net={...}` replaces the node instead of merging into
    it.

    Hydra merges a dict override into the node it replaces, so the task's own network arguments
    would stay; setting the node to null first makes the dict the whole node.
    """
    out = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") in WHOLE_NODE_KEYS and value.lstrip().startswith("{"):
            out.append(f"{key.lstrip('+')}=null")
        out.append(override)
    return out


def sweep_dirname(override_dirname: str) -> str:
    """A sweep point's folder name: its overrides (`seed=1,trainer=deepspeed`), or where they would
    not fit in a file name, as many as fit and a digest of them all (two points never share a
    folder)."""
    if len(override_dirname.encode()) <= MAX_DIRNAME_BYTES:
        return override_dirname
    digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:12]
    head = override_dirname.encode()[: MAX_DIRNAME_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}-{digest}"
