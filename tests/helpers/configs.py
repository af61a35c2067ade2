"""Configs composed from the real configs/ tree, and the overrides that shrink a run to tiny CPU sizes."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pdiff.config import whole_node_overrides

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
# The evaluation's baselines at their smallest: two noise scales, 3 models each, 100 bootstrap resamples
QUICK_EVALUATION = ("evaluate.baselines.noise_scales=[0.01,0.3]", "evaluate.baselines.models_per_scale=3",
                    "evaluate.bootstrap.resamples=100")
# experiment=smoke smaller still, for any task and design: K=10 and 8 generated models
TINY = ("task.param.k=10", "evaluate.baselines.average_of=4", "generate.n=8", *QUICK_EVALUATION)
# W&B offline: one run proves the pipeline and the logger; one thread, as the in-process reruns that compare with it
SMOKE = ("experiment=smoke", "logger=wandb", "threads=1")


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        return compose(config_name="config", overrides=whole_node_overrides(overrides))
