"""Shared fixtures: configs composed from the real configs/ tree, shrunk to tiny CPU sizes."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from matplotlib import image
from omegaconf import DictConfig

from pdiff import atomic
from pdiff.config import whole_node_overrides
from pdiff.entry import register_configs
from pdiff.zoo.store import ParamZoo, run_path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
os.environ["PDIFF_QUIET"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
register_configs()


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        return compose(config_name="config", overrides=whole_node_overrides(overrides))


def pytest_runtest_setup(item) -> None:
    """A `gpu` test skips without CUDA, naming it; with PDIFF_REQUIRE_GPU=1 (the GPU check) it fails instead."""
    if item.get_closest_marker("gpu") is None or torch.cuda.is_available():
        return
    reason = "CUDA is not available (torch.cuda.is_available() is False): the GPU tier needs a CUDA GPU"
    if os.environ.get("PDIFF_REQUIRE_GPU") == "1":
        pytest.fail(f"PDIFF_REQUIRE_GPU=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def smoke_cfg(tmp_path) -> DictConfig:
    return compose_config(["experiment=smoke", f"paths.output_dir={tmp_path / 'run'}"])


def write_zoo(directory: Path, zoo: ParamZoo) -> ParamZoo:
    """Write an in-memory zoo to `directory` the way collection does (one collection run, merged); returns it loaded."""
    collected = run_path(directory, 0, 1)
    atomic.write_safetensors(collected, {"params": zoo.vectors.float(), "val_accuracy": zoo.val_accuracy.double()})
    return ParamZoo.merge(directory, [collected], zoo.spec, zoo.meta)


def run_sweep(args: list[str], timeout: int = 600, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    """Run launch/sweep.py as a user would (after a command `prefix`, e.g. unshare); returns the finished process."""
    env = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline")
    return subprocess.run([*prefix, sys.executable, str(REPO / "launch" / "sweep.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`result`, after asserting it exited 0 (the failure shows the tail of its output)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@dataclass(frozen=True)
class FinishedRun:
    """A finished launch/sweep.py run: its folder, the arguments that made it and what it printed."""

    out: Path
    args: tuple[str, ...]
    output: str


# The evaluation's baselines at their smallest: two noise scales, 3 models each, 100 bootstrap resamples
QUICK_EVALUATION = ("evaluate.baselines.noise_scales=[0.01,0.3]", "evaluate.baselines.models_per_scale=3",
                    "evaluate.bootstrap.resamples=100")
# experiment=smoke smaller still, for any task and design: K=10 and 8 generated models
TINY = ("task.param.k=10", "evaluate.baselines.average_of=4", "generate.n=8", *QUICK_EVALUATION)
# W&B offline: one run proves the pipeline and the logger; one thread, as the in-process reruns that compare with it
SMOKE = ("experiment=smoke", "logger=wandb", "threads=1")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> FinishedRun:
    """One finished `experiment=smoke` run, made once per session for every test that only reads its outputs
    (a test that changes them works on `copy_run`)."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    result = ok(run_sweep([*SMOKE, f"paths.output_dir={out}"]))
    return FinishedRun(out, SMOKE, result.stdout + result.stderr)


def copy_run(run: FinishedRun, dest: Path, parts: tuple[str, ...] | None = None) -> Path:
    """A copy of `run`'s folder in `dest` (file times kept), or of only its `parts`, e.g. ("zoo", "timings.json")."""
    if parts is None:
        shutil.copytree(run.out, dest, symlinks=True)
        return dest
    dest.mkdir(parents=True)
    for part in parts:
        source = run.out / part
        if source.is_dir():
            shutil.copytree(source, dest / part, symlinks=True)
        else:
            shutil.copy2(source, dest / part)
    return dest


def _coloured(path: Path) -> np.ndarray:
    """[H, W] True where the PNG's pixel is saturated colour: data drawn in matplotlib's palette, not the black,
    grey and white of axes, ticks and text."""
    rgb = image.imread(path)[..., :3]
    return (rgb.max(-1) - rgb.min(-1)) > 0.25


def assert_plot_drawn(path: Path, panels: int = 1, min_fraction: float = 1e-3) -> None:
    """The PNG shows data in each of its `panels` side-by-side panels: an empty axes (or a blank figure) has no
    saturated pixels, a curve or markers have thousands."""
    coloured = _coloured(path)
    width = coloured.shape[1]
    strips = [coloured[:, i * width // panels:(i + 1) * width // panels].mean() for i in range(panels)]
    assert all(fraction > min_fraction for fraction in strips), (path.name, strips)


def logged_losses(out: Path, phase: str) -> list[tuple[int, float]]:
    """(step, loss) of each metrics.jsonl row of a training phase (the `name` of pdiff.training.fit.fit)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(row[f"{phase}/step"], row[f"{phase}/loss"]) for row in rows if f"{phase}/loss" in row]


def assert_training_logged_and_plotted(out: Path, phases: dict[str, str]) -> None:
    """Every training phase of the design logged finite losses at increasing steps, and has its drawn panel."""
    assert phases, "the design declares no training phase"
    for phase in phases:
        logged = logged_losses(out, phase)
        steps = [step for step, _ in logged]
        assert len(logged) >= 2 and steps == sorted(set(steps)), (phase, logged)
        assert all(math.isfinite(loss) and loss >= 0 for _, loss in logged), (phase, logged)
    assert_plot_drawn(out / "training_curves.png", panels=len(phases))
