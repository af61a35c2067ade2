"""The job chain's faults and checks, preemption and Hydra's submitit launcher on the one-node SLURM
cluster.

The chain itself and DeepSpeed ranks under SLURM run across two hosts:
tests/cluster/test_two_hosts.py.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from pdiff import atomic
from pdiff.cluster.chain import submit_pipeline
from pdiff.config import Stage
from pdiff.errors import ConfigError
from pdiff.pipeline.output_dir import mark_made_by_pdiff
from pdiff.pipeline.run import run_pipeline
from pdiff.pipeline.stage_dirs import claim_stage_dir, stage_inputs
from pdiff.zoo.store import run_path
from tests.helpers.configs import QUICK_EVALUATION, REPO, TINY, compose_config
from tests.helpers.runs import ok, run_sweep

pytestmark = pytest.mark.slow
SMALL = [
    "experiment=smoke",
    "task=digits_cnn",
    "threads=1",
    "cluster.cpus_per_task=1",
    "cluster.mem_gb=1",
    "cluster.timeout_min=10",
]


def submit(args, timeout=600):
    env = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline")
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "submit.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def submitted_ids(stdout: str) -> dict[str, str]:
    return {
        line.split(":")[0].removeprefix("submitted "): line.rsplit(" ", 1)[1]
        for line in stdout.splitlines()
        if line.startswith("submitted ")
    }


def wait_for(condition, what: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def job_files(out: Path, job_id: str, pattern: str) -> list[Path]:
    """Files of job `job_id` (an array task: ID_INDEX) in the run's submitit folders."""
    return sorted((out / ".submitit").glob(f"*/{job_id}/{pattern}"))


def kill_job_processes(job_id: str) -> None:
    """SIGKILL the Python that SLURM runs for job `job_id` (an array task: ARRAY_INDEX) on this
    node, as if the node died under it: no signal handler, no clean-up. (scancel's signals reach it
    only after SLURM's KillWait: submitit ignores SIGTERM.)"""
    array, _, index = job_id.partition("_")
    wanted = (
        {"SLURM_ARRAY_JOB_ID": array, "SLURM_ARRAY_TASK_ID": index}
        if index
        else {"SLURM_JOB_ID": array}
    )
    wanted["SLURM_CLUSTER_NAME"] = (
        "pdiff"  # the one-node cluster's, not the two-host one's job of the same id
    )
    killed = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if (
            not command
            or not Path(command[0]).name.startswith("python")
            or "submitit.core._submit" not in command
        ):
            continue
        try:
            environment = process.environ()
        except psutil.Error:
            continue
        if all(environment.get(key) == value for key, value in wanted.items()):
            process.kill()
            killed.append(process.pid)
    assert killed, f"no process of job {job_id} on this node"


def test_killed_and_time_limited_collection_tasks_resume_to_the_uninterrupted_checkpoints(tmp_path):
    """Collection run 0 is SIGKILLed (a node dying); run 1 gets SLURM's time-limit signal (SIGUSR2,
    sent here with scancel when its first resume point is on disk rather than waiting out a time
    limit), checkpoints, requeues itself and finishes. Resubmitting runs only run 0 again, which
    resumes; both runs end bit for bit as an uninterrupted in-process collection. (Training on a
    resumed zoo: the whole-model chain's test.)"""
    args = [
        *SMALL,
        "task.param.k=40",
        "task.collect.runs=2",
        "task.collect.steps_per_checkpoint=60",
        "task.collect.save_state_every=1",
        "cluster.signal_delay_s=90",
        *QUICK_EVALUATION,
    ]
    out = tmp_path / "cluster"
    first = ok(submit([*args, f"paths.output_dir={out}"]))
    ids = submitted_ids(first.stdout)
    runs = [ids[f"collect run {r}"] for r in range(2)]
    states = [run_path(out / "zoo", r, 2).with_suffix(".state.pt") for r in range(2)]
    wait_for(states[0].is_file, "run 0's first resume point")
    kill_job_processes(runs[0])  # dies mid-way, like a node
    wait_for(states[1].is_file, "run 1's first resume point")
    subprocess.run(
        ["scancel", "--signal=USR2", runs[1]], check=True
    )  # what --signal=USR2@90 sends at the limit

    def run1_log() -> str:
        return "".join(path.read_text() for path in job_files(out, runs[1], "*_0_log.err"))

    wait_for(lambda: "DUE TO JOB REQUEUE" in run1_log(), "run 1 to requeue itself", 120)
    # The checkpoints a resume point holds are written once each: a run that resumes leaves them as
    # they are, one that starts over writes them again
    kept = {
        path: (path.stat().st_ino, path.stat().st_mtime_ns)
        for state in states
        for path in sorted(state.parent.glob(f"{state.stem}.part*"))
    }
    assert {path.name.split(".")[0] for path in kept} == {"run-0000-of-0002", "run-0001-of-0002"}, (
        kept
    )
    reference = tmp_path / "in_process"
    run_pipeline(compose_config([*args, "stage=collect", f"paths.output_dir={reference}"]))
    wait_for(lambda: run_path(out / "zoo", 1, 2).is_file(), "run 1 to finish after its requeue")
    assert not run_path(out / "zoo", 0, 2).is_file()
    assert "Caught signal SIGUSR2" in run1_log()
    flags = "".join(
        path.read_text() for path in job_files(out, runs[1].split("_")[0], "*_submission.sh")
    )
    assert "#SBATCH --signal=USR2@90" in flags and "#SBATCH --time=10" in flags, (
        flags
    )  # SLURM's own time limit
    cancel = [
        ids["train"],
        ids["report"],
    ]  # waiting on the failed array (kill-on-invalid-dep), or cancel them

    subprocess.run(["scancel", *cancel])
    resumed = ok(submit([*args, f"paths.output_dir={out}"]))
    again = submitted_ids(resumed.stdout)
    assert list(again) == ["collect run 0", "train", "report"]
    wait_for(
        lambda: run_path(out / "zoo", 0, 2).is_file(), "run 0 to finish after its resubmission"
    )
    subprocess.run(["scancel", again["train"], again["report"]])
    for run in range(2):
        cluster, local = (
            atomic.read_safetensors(run_path(folder / "zoo", run, 2)) for folder in (out, reference)
        )
        assert cluster.keys() == local.keys() and len(cluster["params"]) == 20
        assert all(torch.equal(cluster[key], local[key]) for key in local), run
    assert {
        path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in kept
    } == kept  # both resumed


def test_a_failing_task_stops_the_chain_and_is_reported(tmp_path):
    out = tmp_path / "run"
    args = [*SMALL, "task.collect.runs=2", f"paths.output_dir={out}"]
    mark_made_by_pdiff(out)  # a folder of pdiff's whose zoo/ holds a damaged base model
    (out / "zoo").mkdir()
    claim_stage_dir(
        out / "zoo", stage_inputs(compose_config(args), Stage.collect), keep_on_change=True
    )
    (out / "zoo" / "base_model.safetensors").write_bytes(b"not a safetensors file")
    result = submit([*args, "--wait"])
    assert result.returncode != 0
    assert "FAILED: job 'collect run 0'" in result.stderr and "ended FAILED" in result.stderr
    assert "_log.err" in result.stderr
    assert not (out / "report.json").exists()
    assert "generated best" not in result.stdout


def test_bad_cluster_config_stops_launch_submit_before_submission(tmp_path):
    result = submit([*SMALL, "cluster.partition=nope", f"paths.output_dir={tmp_path / 'run'}"])
    assert result.returncode != 0
    assert (
        "pdiff: error: cluster.partition='nope' is not a partition of this cluster; allowed: ['debug']"
        in result.stderr
    )
    assert "submitted" not in result.stdout and not (tmp_path / "run" / ".submitit").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["cluster.cpus_per_task=64"],
            "cluster.cpus_per_task=64 is more than a node of partition debug has",
        ),
        (
            ["trainer=deepspeed", "cluster.tasks_per_node=3"],
            "cluster.tasks_per_node=3 x cluster.cpus_per_task=1 CPUs do not fit a node of partition debug: at most 2",
        ),
        (
            ["trainer=deepspeed", "cluster.nodes=2"],
            "cluster.nodes=2 is more than partition debug gives a job: at most 1 "
            "node (the job would wait forever)",
        ),
        (
            ["cluster.mem_gb=100000"],
            "cluster.mem_gb=100000 is more memory than a node of partition debug has: at most",
        ),
    ],
)
def test_bad_cluster_config_stops_before_submission(overrides, message, tmp_path):
    with pytest.raises(ConfigError) as error:
        submit_pipeline(
            compose_config([*SMALL, *overrides, f"paths.output_dir={tmp_path / 'run'}"])
        )
    assert message in str(error.value)
    assert not (tmp_path / "run" / ".submitit").exists()


def test_hydra_submitit_sweep_over_seeds_is_one_array(tmp_path):
    out = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.timeout_min=10",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "experiment=smoke",
        "task=digits_cnn",
        "threads=1",
        f"paths.output_dir={out}",
        "seed=0,1",
    ]
    ok(run_sweep(args))
    reports = sorted(out.glob("*/report.json"))
    assert [p.parent.name for p in reports] == [
        f"experiment=smoke,seed={s},task=digits_cnn,threads=1" for s in range(2)
    ]
    assert {json.loads(p.read_text())["generated"]["n"] for p in reports} == {20}
    logs = sorted((out / ".submitit").glob("*_*/*_log.out"))
    assert len({p.parent.name.split("_")[0] for p in logs}) == 1  # one array, a task per seed
    assert len(logs) == 2
    generated = [
        load_file(str(p.parent / "generated" / "params.safetensors"))["params"] for p in reports
    ]
    assert generated[0].shape[0] == 20 and not torch.equal(
        generated[0], generated[1]
    )  # the seeds differ


def test_hand_written_sbatch_script_runs_the_pipeline(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline", PDIFF_OUTPUT_DIR=str(out))
    done = subprocess.run(
        [
            "sbatch",
            "--wait",
            "--cpus-per-task=1",
            "--mem=1G",
            f"--output={tmp_path}/job.out",
            "slurm/jobs/digits_default.sh",
            "experiment=smoke",
            "task=digits_cnn",
            *TINY,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr + (tmp_path / "job.out").read_text()[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["k"] == 10 and report["generated"]["n"] == 8
