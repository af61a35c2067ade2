"""Shared fixtures; the helpers they use live in tests/helpers/."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from pdiff.entry import register_configs
from tests.helpers.configs import SMOKE, compose_config
from tests.helpers.runs import FinishedRun, made_once, ok, run_sweep
from tests.helpers.training import TRAIN, copy_zoo


def _private_home() -> Path | None:
    """A $HOME of this test run's own, made by the first pytest process and inherited by its xdist
    workers and every subprocess and SLURM job they start: nothing a user's home or settings hold
    (W&B or matplotlib settings, pdiff's MNIST-1D cache, XDG folders) reaches a test. It lies in
    /var/tmp, which every test host sees (their /tmp is their own), as a cluster's nodes share
    $HOME. Returns the folder when this process made it (it removes it)."""
    if "PDIFF_TEST_HOME" in os.environ:
        return None
    home = Path(tempfile.mkdtemp(prefix="pdiff-test-home-", dir="/var/tmp"))
    for variable in (
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "MPLCONFIGDIR",
        "WANDB_DIR",
        "WANDB_CONFIG_DIR",
        "WANDB_CACHE_DIR",
        "WANDB_DATA_DIR",
        "SLURM_CONF",
    ):
        os.environ.pop(variable, None)
    os.environ.update(PDIFF_TEST_HOME=str(home), HOME=str(home))
    return home


_MADE_HOME = _private_home()
os.environ["PDIFF_QUIET"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
register_configs()


def pytest_unconfigure(config) -> None:
    if _MADE_HOME is not None:
        shutil.rmtree(_MADE_HOME, ignore_errors=True)


def pytest_runtest_setup(item) -> None:
    """A `gpu` test skips without CUDA, naming it; with PDIFF_REQUIRE_GPU=1 (the GPU check) it fails
    instead."""
    if item.get_closest_marker("gpu") is None or torch.cuda.is_available():
        return
    reason = (
        "CUDA is not available (torch.cuda.is_available() is False): the GPU tier needs a CUDA GPU"
    )
    if os.environ.get("PDIFF_REQUIRE_GPU") == "1":
        pytest.fail(f"PDIFF_REQUIRE_GPU=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def smoke_cfg(tmp_path) -> DictConfig:
    return compose_config(
        ["experiment=smoke", "task=digits_cnn", f"paths.output_dir={tmp_path / 'run'}"]
    )


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> FinishedRun:
    """One finished `experiment=smoke` run, made once per test run (shared by the xdist workers) for
    every test that only reads its outputs (a test that changes them works on `copy_run`)."""

    def make(folder: Path) -> str:
        result = ok(run_sweep([*SMOKE, f"paths.output_dir={folder / 'run'}"]))
        return result.stdout + result.stderr

    folder, output = made_once(tmp_path_factory, "smoke", make)
    return FinishedRun(folder / "run", SMOKE, output)


@pytest.fixture(scope="session")
def plain_train_run(smoke_run, tmp_path_factory) -> Path:
    """TRAIN in one plain process on the smoke run's zoo, made once per test run: what every
    multi-rank launch of it must follow."""

    def make(folder: Path) -> str:
        out = copy_zoo(smoke_run.out, folder / "run")
        return ok(run_sweep(["stage=train", *TRAIN, f"paths.output_dir={out}"])).stdout

    return made_once(tmp_path_factory, "plain", make)[0] / "run"
