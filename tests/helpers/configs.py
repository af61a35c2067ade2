"""Configs composed from the real configs/ tree, and the overrides that shrink a run to tiny CPU
sizes."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from benchmarks import compose

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
# The evaluation's baselines at their smallest: two noise scales, 3 models each, 100 bootstrap
# resamples
QUICK_EVALUATION = (
    "evaluate.baselines.noise_scales=[0.01,0.3]",
    "evaluate.baselines.models_per_scale=3",
    "evaluate.bootstrap.resamples=100",
)
# experiment=smoke smaller still, for any task and design: K=10 and 8 generated models
TINY = ("task.param.k=10", "evaluate.baselines.average_of=4", "generate.n=8", *QUICK_EVALUATION)
# W&B offline: one run proves the pipeline and the logger; one thread, as the in-process reruns that
# compare with it
SMOKE = ("experiment=smoke", "task=digits_cnn", "logger=wandb", "threads=1")


# The tests' task, the fastest (digits: seconds a run), where a test names none. The default task,
# the main job (mnist1d_mlp), is composed by the tests that name it and by
# tests/unit/test_config.py's test of the defaults.
TEST_TASK = "task=digits_cnn"


def with_test_task(overrides: list[str]) -> list[str]:
    """`overrides` on the tests' task, unless they choose a task themselves, or an experiment that
    chooses one."""
    chooses = any(
        o.startswith(("task=", "+task="))
        or (o.startswith("experiment=") and o != "experiment=smoke")
        for o in overrides
    )
    return list(overrides) if chooses else [TEST_TASK, *overrides]


def compose_config(overrides: list[str], test_task: bool = True) -> DictConfig:
    """The config `overrides` compose to from configs/ (on the tests' task unless `test_task` is
    false)."""
    return compose.compose_config(with_test_task(overrides) if test_task else list(overrides))
