"""What a submission asks of SLURM, checked before anything is submitted: SLURM's own rules on
cluster.* and on the Hydra launcher's settings, and (with a stand-in `sinfo` here; the real one in
tests/cluster/test_submission_checks.py) what the partition offers."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pdiff.cluster.chain import CheckSlurmLauncher, submit_chain
from pdiff.cluster.slurm import chain_request, check_request, launcher_request
from pdiff.config import validate
from pdiff.errors import ConfigError
from tests.helpers.configs import CONFIGS, compose_config

ONE_NODE = "debug*|1|2|7812|infinite|1-infinite\n"  # sinfo -o '%P|%D|%c|%m|%l|%s' of the local one-node cluster


def fake_command(monkeypatch, tmp_path: Path, name: str, body: str) -> None:
    """A shell script `name` first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def fake_sinfo(monkeypatch, tmp_path: Path, stdout: str, stderr: str = "", status: int = 0) -> None:
    """A `sinfo` first on PATH that prints `stdout` and `stderr` and exits with `status`."""
    fake_command(
        monkeypatch,
        tmp_path,
        "sinfo",
        f"printf '%s' '{stdout}'\nprintf '%s' '{stderr}' >&2\nexit {status}",
    )


def hydra_config(overrides: list[str]) -> DictConfig:
    """The config with its hydra node, as a Hydra callback receives it."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "cluster.timeout_min=0",
            r"cluster.timeout_min=0 is invalid: must be >= 1 \(minutes\): SLURM reads 0 or less as "
            "no time limit",
        ),
        ("cluster.timeout_min=-1", r"cluster.timeout_min=-1 is invalid: must be >= 1"),
        (
            "cluster.signal_delay_s=-5",
            r"cluster.signal_delay_s=-5 is invalid: must be in \[0, 65535\]",
        ),
        (
            "cluster.signal_delay_s=3600",
            r"cluster.signal_delay_s=3600 is invalid: must be less than the time limit, "
            r"cluster.timeout_min=60 min \(3600 s\)",
        ),
        ("cluster.array_parallelism=0", r"cluster.array_parallelism=0 is invalid: must be >= 1"),
        ("cluster.max_requeues=-1", r"cluster.max_requeues=-1 is invalid: must be >= 0"),
        ("cluster.mem_gb=0", r"cluster.mem_gb=0 is invalid: must be >= 1 \(GB per node\)"),
        ("cluster.cpus_per_task=0", r"cluster.cpus_per_task=0 is invalid: must be >= 1"),
        ("cluster.max_array_size=0", r"cluster.max_array_size=0 is invalid: must be >= 1"),
    ],
)
def test_cluster_settings_slurm_would_misread_are_refused_by_the_config_check(
    override, message, tmp_path
):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config([override, f"paths.output_dir={tmp_path}"]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=0"],
            r"hydra.launcher.timeout_min=0 is invalid",
        ),
        (
            ["hydra/launcher=submitit_slurm", "hydra.launcher.max_num_timeout=-1"],
            r"hydra.launcher.max_num_timeout=-1 is invalid: must be >= 0",
        ),
        (
            ["hydra/launcher=submitit_slurm", "hydra.launcher.array_parallelism=0"],
            r"hydra.launcher.array_parallelism=0 is invalid",
        ),
        (
            ["hydra/launcher=pdiff_slurm", "cluster.signal_delay_s=-1"],
            r"cluster.signal_delay_s=-1 is invalid",
        ),
        (
            ["hydra/launcher=pdiff_slurm", "cluster.timeout_min=-1"],
            r"cluster.timeout_min=-1 is invalid",
        ),
    ],
)
def test_a_slurm_sweep_with_bad_settings_exits_with_one_line_before_asking_slurm(
    overrides, message, tmp_path, monkeypatch
):
    fake_sinfo(monkeypatch, tmp_path, "", "sinfo must not be asked", 1)
    config = hydra_config([*overrides, f"paths.output_dir={tmp_path / 'sweep'}"])
    with pytest.raises(SystemExit) as exit_:
        CheckSlurmLauncher().on_multirun_start(config)
    assert str(exit_.value.code).startswith("pdiff: error: ") and "\n" not in str(exit_.value.code)
    assert re.search(message, str(exit_.value.code))
    assert not (tmp_path / "sweep").exists()


def test_a_sweep_on_another_launcher_is_left_alone(tmp_path, monkeypatch):
    fake_sinfo(monkeypatch, tmp_path, "", "sinfo must not be asked", 1)
    CheckSlurmLauncher().on_multirun_start(hydra_config([f"paths.output_dir={tmp_path}"]))
    assert launcher_request(hydra_config([f"paths.output_dir={tmp_path}"])) is None


def test_no_controller_is_one_line_saying_what_to_start(tmp_path, monkeypatch):
    fake_sinfo(
        monkeypatch,
        tmp_path,
        "",
        "sinfo: error: Unable to contact slurm controller (connect failure)\n",
        1,
    )
    config = hydra_config(
        ["hydra/launcher=submitit_slurm", f"paths.output_dir={tmp_path / 'sweep'}"]
    )
    with pytest.raises(SystemExit) as exit_:
        CheckSlurmLauncher().on_multirun_start(config)
    line = str(exit_.value.code)
    assert (
        line.startswith("pdiff: error: no SLURM controller answers (`sinfo ") and "\n" not in line
    )
    assert "failed: sinfo: error: Unable to contact slurm controller (connect failure))" in line
    assert line.endswith(
        ": start the local cluster with `bash slurm/local-cluster.sh up`, or point SLURM_CONF at "
        "your cluster's slurm.conf"
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["trainer=deepspeed", "cluster.nodes=2"],
            "cluster.nodes=2 is more than partition debug gives a job: at most 1 node (the job would wait forever)",
        ),
        (
            ["cluster.mem_gb=100000"],
            "cluster.mem_gb=100000 is more memory than a node of partition debug has: at most "
            "7 GB (7812 MB)",
        ),
        (
            ["cluster.cpus_per_task=3"],
            "cluster.cpus_per_task=3 is more than a node of partition debug has: at most 2",
        ),
        (
            ["trainer=deepspeed", "cluster.tasks_per_node=3"],
            "cluster.tasks_per_node=3 x cluster.cpus_per_task=1 CPUs do not fit a node of partition "
            "debug: at most 2 CPUs",
        ),
        (
            ["cluster.partition=gpu"],
            "cluster.partition='gpu' is not a partition of this cluster; allowed: ['debug']",
        ),
    ],
)
def test_the_chain_asks_only_what_the_partition_offers(overrides, message, tmp_path, monkeypatch):
    fake_sinfo(monkeypatch, tmp_path, ONE_NODE)
    cfg = compose_config([*overrides, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError) as error:
        check_request(chain_request(cfg.cluster))
    assert str(error.value) == message


def test_a_sweep_asks_only_what_the_partition_offers(tmp_path, monkeypatch):
    fake_sinfo(
        monkeypatch,
        tmp_path,
        "debug|2|4|16000|1-00:00:00|1-infinite\nbig|4|64|512000|infinite|1-2\n",
    )
    sweep = ["hydra/launcher=submitit_slurm", f"paths.output_dir={tmp_path / 'sweep'}"]
    with pytest.raises(SystemExit) as exit_:
        CheckSlurmLauncher().on_multirun_start(hydra_config(sweep))
    assert exit_.value.code == (
        "pdiff: error: hydra.launcher.partition is not set and this cluster has no default "
        "partition; allowed: ['big', 'debug']"
    )
    with pytest.raises(
        ConfigError,
        match=r"hydra.launcher.timeout_min=1500 is more than the time limit of partition "
        r"debug: at most 1440 minutes",
    ):
        check_request(
            launcher_request(
                hydra_config(
                    [*sweep, "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=1500"]
                )
            )
        )
    with pytest.raises(
        ConfigError,
        match=r"hydra.launcher.nodes=3 is more than partition big gives a job: at most 2",
    ):
        check_request(
            launcher_request(
                hydra_config([*sweep, "hydra.launcher.partition=big", "hydra.launcher.nodes=3"])
            )
        )
    check_request(
        launcher_request(
            hydra_config(
                [
                    *sweep,
                    "hydra.launcher.partition=big",
                    "hydra.launcher.nodes=2",
                    "hydra.launcher.mem_gb=500",
                    "hydra.launcher.timeout_min=5000",
                ]
            )
        )
    )
    with pytest.raises(
        ConfigError, match=r"cluster.mem_gb=32 is more memory than a node of partition debug"
    ):
        check_request(
            launcher_request(
                hydra_config(
                    [
                        "hydra/launcher=pdiff_slurm",
                        "cluster=gpu",
                        "cluster.partition=debug",
                        "cluster.cpus_per_task=4",
                        f"paths.output_dir={tmp_path}",
                    ]
                )
            )
        )


def test_a_job_sbatch_refuses_cancels_the_jobs_submitted_before_it(tmp_path, monkeypatch):
    """What the checks cannot know (here: an account) is sbatch's to refuse: one line, and no half
    chain left."""
    fake_sinfo(monkeypatch, tmp_path, ONE_NODE)
    cancelled = tmp_path / "cancelled"
    fake_command(
        monkeypatch,
        tmp_path,
        "sbatch",
        f"if [ -e {tmp_path}/first ]; then echo 'sbatch: error: Batch job "
        "submission failed: Invalid account or account/partition combination specified' >&2; exit 1; fi\n"
        f"touch {tmp_path}/first; echo 'Submitted batch job 101'",
    )
    fake_command(monkeypatch, tmp_path, "scancel", f'echo "$@" >> {cancelled}')
    out = tmp_path / "run"
    cfg = compose_config(
        [
            "experiment=smoke",
            "cluster.max_array_size=1000",
            "cluster.account=nope",
            f"paths.output_dir={out}",
        ]
    )
    with pytest.raises(ConfigError) as error:
        submit_chain(cfg)
    assert str(error.value) == (
        "sbatch refused a job of the chain (sbatch: error: Batch job submission failed: "
        "Invalid account or account/partition combination specified); the 1 jobs submitted "
        "before it were cancelled: check the cluster.* settings"
    )
    assert cancelled.read_text().split() == ["101"]
