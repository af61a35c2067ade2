"""Shared fixtures: configs composed from the real configs/ tree, shrunk to tiny CPU sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pdiff import atomic
from pdiff.config import register_configs, whole_node_overrides
from pdiff.zoo import ParamZoo, run_path

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
