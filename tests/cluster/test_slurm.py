"""The job chain, collection arrays, preemption and Hydra's submitit launcher on a real SLURM cluster."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from pdiff.zoo import ParamZoo
from tests.conftest import REPO, ok, run_sweep

pytestmark = pytest.mark.slow
SMALL = ["experiment=smoke", "threads=1", "cluster.cpus_per_task=1", "cluster.mem_gb=1", "cluster.timeout_min=10"]


def submit(args, timeout=600):
    env = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline")
    return subprocess.run([sys.executable, str(REPO / "launch" / "submit.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def sacct_states(job_id: str, since: str) -> dict[str, str]:
    """States of a job's records submitted since `since` (ids restart on a new controller)."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-S", since, "--format=JobID,State"],
                         capture_output=True, text=True).stdout
    return dict(line.split("|")[:2] for line in out.split())


def submitted_ids(stdout: str) -> dict[str, str]:
    return {line.split(":")[0].removeprefix("submitted "): line.rsplit(" ", 1)[1]
            for line in stdout.splitlines() if line.startswith("submitted ")}


def test_whole_model_runs_as_a_split_collection_array_then_resubmit_does_nothing(tmp_path):
    out = tmp_path / "run"
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    args = [*SMALL, "experiment=[mnist1d_full,smoke]", "task.collect.runs=4", f"paths.output_dir={out}"]
    result = ok(submit([*args, "cluster.max_array_size=3", "--wait"]))
    ids = submitted_ids(result.stdout)
    assert list(ids) == ["base", *[f"collect run {r}" for r in range(4)], "train", "report"]
    arrays = {ids[f"collect run {r}"].split("_")[0] for r in range(4)}
    assert len(arrays) == 2  # 4 tasks over MaxArraySize=3: two arrays
    assert "generated best/mean/min" in result.stdout
    zoo = ParamZoo.load(out / "zoo")
    assert zoo.k == 20 and zoo.meta["run_sizes"] == [5, 5, 5, 5] and zoo.meta["runs"] == 4
    assert len({record["init_seed"] for record in zoo.meta["run_records"]}) == 4  # 4 initialisations
    assert zoo.meta["checkpoint_run"] == [r for r in range(4) for _ in range(5)]
    assert len({tuple(v.tolist()) for v in zoo.vectors}) == 20  # no checkpoint twice
    time.sleep(1)
    for job_id in ids.values():
        assert set(sacct_states(job_id.split("_")[0], since).values()) == {"COMPLETED"}, job_id

    again = ok(submit([*args, "--wait"]))
    assert "nothing to do" in again.stdout and "submitted" not in again.stdout

    (out / "report.json").unlink()
    half = ok(submit([*args, "--wait"]))
    assert list(submitted_ids(half.stdout)) == ["report"]
    assert (out / "report.json").is_file()


def test_killed_collection_task_resumes_with_exactly_its_checkpoints(tmp_path):
    args = [*SMALL, "task.param.k=400", "task.collect.runs=2", "task.collect.steps_per_checkpoint=0",
            "task.collect.save_state_every=5"]
    reference = tmp_path / "in_process"
    ok(run_sweep([*args, "stage=collect", f"paths.output_dir={reference}"]))
    out = tmp_path / "cluster"
    first = ok(submit([*args, f"paths.output_dir={out}"]))
    run0 = submitted_ids(first.stdout)["collect run 0"]
    state = out / "zoo" / "runs" / "run-0000-of-0002.state.pt"
    deadline = time.time() + 300
    while not state.is_file() and time.time() < deadline:
        time.sleep(0.2)
    assert state.is_file(), "run 0 never saved a resume point"
    subprocess.run(["scancel", "--signal=KILL", "--full", run0], check=True)  # dies mid-way, like a node
    time.sleep(3)
    assert not (out / "zoo" / "runs" / "run-0000-of-0002.safetensors").exists()
    for name in ("pdiff-collect", "pdiff-train", "pdiff-report"):
        subprocess.run(["scancel", f"--name={name}"])
    time.sleep(2)
    resumed = ok(submit([*args, f"paths.output_dir={out}", "--wait"]))
    assert "base" not in submitted_ids(resumed.stdout)
    cluster_zoo, local_zoo = ParamZoo.load(out / "zoo"), ParamZoo.load(reference / "zoo")
    assert cluster_zoo.k == 400
    assert torch.equal(cluster_zoo.vectors, local_zoo.vectors)
    assert torch.equal(cluster_zoo.val_accuracy, local_zoo.val_accuracy)


def test_a_failing_task_stops_the_chain_and_is_reported(tmp_path):
    out = tmp_path / "run"
    (out / "zoo").mkdir(parents=True)
    (out / "zoo" / "base_model.safetensors").write_bytes(b"not a safetensors file")
    result = submit([*SMALL, "task.collect.runs=2", f"paths.output_dir={out}", "--wait"])
    assert result.returncode != 0
    assert "FAILED: job 'collect run 0'" in result.stderr and "ended FAILED" in result.stderr
    assert "_log.err" in result.stderr
    assert not (out / "report.json").exists()
    assert "generated best" not in result.stdout


@pytest.mark.parametrize("overrides, message", [
    (["cluster.partition=nope"], "cluster.partition='nope' is not a partition of this cluster; allowed: ['debug']"),
    (["cluster.cpus_per_task=64"], "cluster.cpus_per_task=64 is more than a node of partition debug has"),
    (["trainer=deepspeed", "cluster.tasks_per_node=3"],
     "cluster.tasks_per_node=3 x cluster.cpus_per_task=1 CPUs do not fit a node of partition debug: at most 2"),
])
def test_bad_cluster_config_stops_before_submission(overrides, message, tmp_path):
    result = submit([*SMALL, *overrides, f"paths.output_dir={tmp_path / 'run'}"])
    assert result.returncode != 0 and message in result.stderr
    assert "submitted" not in result.stdout and not (tmp_path / "run" / ".submitit").exists()


def test_hydra_submitit_sweep_over_three_seeds_is_one_array(tmp_path):
    out = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=10",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "experiment=smoke", "threads=1",
            f"paths.output_dir={out}", "seed=0,1,2"]
    ok(run_sweep(args))
    reports = sorted(out.glob("*/report.json"))
    assert [p.parent.name for p in reports] == [f"experiment=smoke,seed={s},threads=1" for s in range(3)]
    assert {json.loads(p.read_text())["generated"]["n"] for p in reports} == {20}
    logs = sorted((out / ".submitit").glob("*_*/*_log.out"))
    assert len({p.parent.name.split("_")[0] for p in logs}) == 1  # one array, three tasks
    assert len(logs) == 3
    generated = load_file(str(reports[0].parent / "generated" / "params.safetensors"))["params"]
    assert generated.shape[0] == 20


def test_time_limit_checkpoints_requeues_and_finishes(tmp_path):
    out = tmp_path / "run"
    args = [*SMALL, "task.param.k=2500", "task.collect.steps_per_checkpoint=0", "task.collect.save_state_every=20",
            "cluster.timeout_min=2", "cluster.signal_delay_s=60", "cluster.max_requeues=5", f"paths.output_dir={out}"]
    result = ok(submit([*args, "--wait"], timeout=900))
    run0 = submitted_ids(result.stdout)["collect run 0"]
    log = next((out / ".submitit").glob(f"*/{run0}/{run0}_0_log.err")).read_text()
    assert "Caught signal SIGUSR2" in log and "DUE TO JOB REQUEUE" in log, log[-2000:]
    zoo = ParamZoo.load(out / "zoo")
    assert zoo.k == 2500 and len({tuple(v.tolist()) for v in zoo.vectors}) == 2500


def test_hand_written_sbatch_script_runs_the_pipeline(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline", PDIFF_OUTPUT_DIR=str(out))
    done = subprocess.run(["sbatch", "--wait", "--cpus-per-task=1", "--mem=1G", f"--output={tmp_path}/job.out",
                           "slurm/digits_default.sh", "experiment=smoke"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr + (tmp_path / "job.out").read_text()[-3000:]
    assert json.loads((out / "report.json").read_text())["k"] == 20


def test_submitit_slurm_with_two_tasks_trains_as_two_deepspeed_ranks(tmp_path):
    out = tmp_path / "sweep"
    point = ["experiment=smoke", "threads=1", "trainer=deepspeed", "trainer.zero_stage=3", f"paths.output_dir={out}"]
    ok(run_sweep(["-m", "stage=collect", *point]))  # in-process, into the same sweep folder
    ok(run_sweep(["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
                   "hydra.launcher.timeout_min=10", "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1",
                   "hydra.launcher.mem_gb=2", "stage=train", *point]))
    run = out / "experiment=smoke,threads=1,trainer.zero_stage=3,trainer=deepspeed"
    assert json.loads((run / "generator" / "generator.json").read_text())["ranks"] == 2
    logs = sorted(p.name.split("_")[1] for p in (out / ".submitit").glob("*/*_log.out"))
    assert logs == ["0", "1"]  # one job, two tasks
    assert json.loads((run / "generator" / "ae_checkpoint" / "trainer.json").read_text())["world_size"] == 2


def test_sbatch_srun_script_trains_with_two_ranks(tmp_path):
    out = tmp_path / "run"
    ok(run_sweep(["stage=collect", "experiment=smoke", f"paths.output_dir={out}"]))
    env = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline", PDIFF_OUTPUT_DIR=str(out))
    done = subprocess.run(["sbatch", "--wait", "--mem=2G", f"--output={tmp_path}/job.out", "slurm/train_deepspeed.sh",
                           "experiment=smoke", "trainer.zero_stage=2"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr + (tmp_path / "job.out").read_text()[-3000:]
    assert json.loads((out / "generator" / "generator.json").read_text())["ranks"] == 2


def test_chain_trains_with_two_tasks_per_node(tmp_path):
    out = tmp_path / "run"
    result = ok(submit([*SMALL, "trainer=deepspeed", "cluster.tasks_per_node=2", f"paths.output_dir={out}",
                         "--wait"]))
    assert "generated best/mean/min" in result.stdout
    assert json.loads((out / "generator" / "generator.json").read_text())["ranks"] == 2
