"""Both routes to SLURM (launch/submit.py's chain, a sweep on Hydra's submitit_slurm launcher) check
what they ask against the live one-node cluster before anything is submitted; with no controller,
one line says what to start."""

import os
import socket
import subprocess
import sys

import pytest

from tests.cluster.test_slurm import SMALL
from tests.helpers.configs import REPO

pytestmark = pytest.mark.slow


def launch(
    script: str, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline", **(env or {}))
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The one line a refused command printed (it exited non-zero and printed nothing else)."""
    assert result.returncode != 0 and result.stdout == "", result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["hydra/launcher=submitit_slurm", "hydra.launcher.nodes=2"],
            "pdiff: error: hydra.launcher.nodes=2 is more than partition debug gives a job: "
            "at most 1 node (the job would wait forever)",
        ),
        (
            ["hydra/launcher=pdiff_slurm", "cluster.mem_gb=100000"],
            "pdiff: error: cluster.mem_gb=100000 is more memory than a node of partition debug has: at most ",
        ),
    ],
)
def test_a_slurm_sweep_asking_more_than_the_partition_has_submits_nothing(
    overrides, message, tmp_path
):
    out = tmp_path / "sweep"
    line = one_line_error(launch("sweep.py", ["-m", *overrides, f"paths.output_dir={out}"]))
    assert line.startswith(message)
    assert not out.exists()


@pytest.fixture
def no_controller(tmp_path) -> dict[str, str]:
    """SLURM_CONF naming a controller at a port nobody listens on (held, never listened to, by this
    test)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        conf = tmp_path / "slurm.conf"
        conf.write_text(
            f"ClusterName=nocontroller\nSlurmctldHost=localhost\nSlurmctldPort={held.getsockname()[1]}\n"
            "MessageTimeout=1\nAuthType=auth/munge\nNodeName=localhost CPUs=1\n"
            "PartitionName=debug Nodes=localhost Default=YES\n"
        )
        yield {"SLURM_CONF": str(conf)}


@pytest.mark.parametrize(
    "script, args",
    [
        ("sweep.py", ["-m", "hydra/launcher=submitit_slurm"]),  # the mission's own command
        ("submit.py", SMALL),
    ],
)
def test_no_controller_is_one_line_saying_what_to_start(script, args, no_controller, tmp_path):
    out = tmp_path / "run"
    line = one_line_error(launch(script, [*args, f"paths.output_dir={out}"], env=no_controller))
    assert line.startswith("pdiff: error: no SLURM controller answers (`sinfo ")
    assert "Unable to contact slurm controller" in line
    assert line.endswith(
        "start the local cluster with `bash slurm/local-cluster.sh up`, or point SLURM_CONF at "
        "your cluster's slurm.conf"
    )
    assert not (out / ".submitit").exists() and not (out / "config.yaml").exists()
