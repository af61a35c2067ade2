"""Command-line overrides that Hydra would merge where pdiff means to replace."""

from __future__ import annotations

import hashlib

WHOLE_NODE_KEYS = ("task.net",)  # a dict given for these on the command line replaces the node


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


MAX_DIRNAME_BYTES = (
    200  # a file name may hold 255 bytes; what is left is for Hydra's and pdiff's own suffixes
)


def sweep_dirname(override_dirname: str) -> str:
    """A sweep point's folder name: its overrides (`seed=1,trainer=deepspeed`), or where they would
    not fit in a file name, as many as fit and a digest of them all (two points never share a
    folder)."""
    if len(override_dirname.encode()) <= MAX_DIRNAME_BYTES:
        return override_dirname
    digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:12]
    head = override_dirname.encode()[: MAX_DIRNAME_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}-{digest}"
