"""Command-line overrides that Hydra would merge where pdiff means to replace."""

from __future__ import annotations

WHOLE_NODE_KEYS = ("task.net",)  # a dict given for these on the command line replaces the node


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
