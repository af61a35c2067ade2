"""The config a list of overrides composes to from the repository's configs/ tree, as the entry
points compose it: one home for the benchmarks and the tests."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pdiff.config.command_line import whole_node_overrides
from pdiff.entry import register_configs

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def compose_config(overrides: list[str], hydra_node: bool = False) -> DictConfig:
    """The config `overrides` compose to (`task.net={...}` replacing the node), with the hydra node
    when `hydra_node` (as a Hydra callback receives it)."""
    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        return compose(
            config_name="config",
            overrides=whole_node_overrides(list(overrides)),
            return_hydra_config=hydra_node,
        )
