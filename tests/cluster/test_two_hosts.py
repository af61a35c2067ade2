"""Jobs across two hosts (slurm/two-hosts.sh: network namespaces pdiff-node1 and pdiff-node2, each
with its own hostname, address, hosts file, /tmp and /dev/shm): DeepSpeed ranks on both, a
collection array over both, a host that fails mid-training, and a rendezvous that cannot work.

What every host sees, as a cluster's shared file system, is SHARED; a host's /tmp is its own, so a
job that read a file only the other host wrote would fail here.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pdiff.pipeline.run import run_pipeline
from pdiff.zoo.store import ParamZoo
from tests.helpers.configs import QUICK_EVALUATION, REPO, compose_config
from tests.helpers.runs import ok
from tests.helpers.training import TRAIN, copy_zoo, losses, max_weight_diff

pytestmark = (
    pytest.mark.slow
)  # one file: `pytest -n --dist loadfile` runs it in one worker, test by test
CONF = "/etc/pdiff-two-hosts/slurm.conf"
HOSTS = {"pdiff-node1": "10.77.27.11", "pdiff-node2": "10.77.27.12"}
SHARED = Path("/var/tmp/pdiff-two-hosts-tests")
SCRIPT = REPO / "slurm" / "two-hosts.sh"
ZERO3 = ["trainer.zero_stage=3", *TRAIN]


def two_host_env(**extra: str) -> dict:
    """The environment of a client of the two-host cluster (no rendezvous left over from this
    process)."""
    env = {
        key: value for key, value in os.environ.items() if key not in ("MASTER_ADDR", "MASTER_PORT")
    }
    return dict(env, SLURM_CONF=CONF, PDIFF_QUIET="1", WANDB_MODE="offline", **extra)


def slurm(*args: str) -> str:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, check=True, env=two_host_env()
    ).stdout


@pytest.fixture(scope="module", autouse=True)
def two_hosts():
    status = subprocess.run(
        ["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=60
    )
    if status.returncode != 0:
        problem = f"the two-host cluster is not up ({status.stdout.strip()}): run `bash slurm/two-hosts.sh up`"
        if os.environ.get("PDIFF_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"PDIFF_REQUIRE_CLUSTER=1 but {problem}")
        pytest.skip(problem)


def shared_dir() -> Path:
    path = SHARED / uuid.uuid4().hex[:8]
    path.mkdir(parents=True)
    return path


@pytest.fixture
def shared(request):
    """A folder every host sees; kept after a failed test, with its jobs' logs, and named."""
    path = shared_dir()
    yield path
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"the failed test's shared folder (job logs) is kept: {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def session_shared():
    path = shared_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def submit_train(out: Path, log: Path, *overrides: str, env: dict | None = None) -> str:
    """sbatch slurm/jobs/train_deepspeed.sh on both hosts, one rank each; returns the job id."""
    done = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-N2",
            "--ntasks-per-node=1",
            "--mem=2G",
            f"--output={log}",
            "slurm/jobs/train_deepspeed.sh",
            "trainer=deepspeed",
            *overrides,
        ],
        cwd=REPO,
        env=env or two_host_env(PDIFF_OUTPUT_DIR=str(out)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def wait_for(condition, what: str, timeout_s: float = 300.0):
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.25)
    return result


def job_state(job_id: str) -> str:
    """The job's state: squeue while it is queued or runs, then accounting (which lags it by a
    moment)."""
    queued = slurm("squeue", "-h", "-j", job_id, "-o", "%T") if job_id else ""
    if queued.strip():
        return queued.strip()
    records = slurm("sacct", "-n", "-X", "-P", "-j", job_id, "--format=State").split()
    return records[-1] if records else "UNKNOWN"


def finished(job_id: str) -> str | None:
    state = job_state(job_id)
    return (
        state
        if state.startswith(("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"))
        else None
    )


def assert_ranks_on_both_hosts(run: Path) -> None:
    """generator.json names each rank's host and address: one rank on each host."""
    meta = json.loads((run / "generator" / "generator.json").read_text())
    assert meta["ranks"] == 2
    assert sorted(meta["hosts"]) == [f"{host} ({address})" for host, address in HOSTS.items()], (
        meta["hosts"]
    )


@pytest.fixture(
    scope="session"
)  # not per module: `pytest -n` may run another module's tests in between
def zero3_across_hosts(smoke_run, session_shared) -> Path:
    """TRAIN with ZeRO-3 through `sbatch slurm/jobs/train_deepspeed.sh`, a rank on each host,
    uninterrupted."""
    out = copy_zoo(smoke_run.out, session_shared / "zero3")
    job = submit_train(out, session_shared / "zero3.out", *ZERO3)
    state = wait_for(lambda: finished(job), f"job {job}")
    assert state == "COMPLETED", (session_shared / "zero3.out").read_text()[-3000:]
    return out


def test_each_host_has_its_own_name_address_and_tmp(shared):
    marker = f"written-by-{uuid.uuid4().hex[:6]}"
    lines = subprocess.run(
        [
            "srun",
            "-N2",
            "--ntasks-per-node=1",
            "sh",
            "-c",
            f'ls /tmp; touch /tmp/{marker}-$(hostname); echo "host $(hostname) '
            f'$(getent hosts $(hostname) | cut -d" " -f1)"',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=two_host_env(),
        cwd=shared,
    ).stdout.split("\n")
    hosts = sorted(line.split(" ", 1)[1] for line in lines if line.startswith("host "))
    assert hosts == [f"{host} {address}" for host, address in HOSTS.items()]
    seen = subprocess.run(
        ["srun", "-N2", "--ntasks-per-node=1", "sh", "-c", "echo $(hostname): $(ls /tmp)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=two_host_env(),
        cwd=shared,
    ).stdout
    for host in (
        HOSTS
    ):  # each host sees its own marker, not the other's, and this machine's /tmp sees neither
        other = next(name for name in HOSTS if name != host)
        line = next(line for line in seen.splitlines() if line.startswith(f"{host}:"))
        assert f"{marker}-{host}" in line and f"{marker}-{other}" not in line
        assert not Path(f"/tmp/{marker}-{host}").exists()


def test_sbatch_zero3_runs_a_rank_on_each_host_and_follows_one_process(
    zero3_across_hosts, plain_train_run
):
    assert_ranks_on_both_hosts(zero3_across_hosts)
    plain, ranks = losses(plain_train_run), losses(zero3_across_hosts)
    assert plain.keys() == ranks.keys() and len(plain) == 10 + 5
    for key, value in plain.items():
        assert ranks[key] == pytest.approx(value, rel=1e-4), key  # as on one host: 1e-4 relative
    assert max_weight_diff(plain_train_run, zero3_across_hosts) < 1e-4


def test_submitit_launcher_zero2_with_cluster_nodes_2_follows_one_process(
    smoke_run, plain_train_run, shared
):
    out = shared / "sweep"
    run = copy_zoo(
        smoke_run.out, out / ",".join(sorted([*TRAIN, "trainer.zero_stage=2", "trainer=deepspeed"]))
    )
    args = [
        "-m",
        "hydra/launcher=pdiff_slurm",
        "cluster.partition=two",
        "cluster.nodes=2",
        "cluster.tasks_per_node=1",
        "cluster.mem_gb=2",
        "cluster.timeout_min=10",
        "stage=train",
        *TRAIN,
        "trainer=deepspeed",
        "trainer.zero_stage=2",
        f"paths.output_dir={out}",
    ]
    ok(
        subprocess.run(
            [sys.executable, str(REPO / "launch" / "sweep.py"), *args],
            capture_output=True,
            text=True,
            timeout=600,
            env=two_host_env(),
            cwd=REPO,
        )
    )
    assert_ranks_on_both_hosts(run)
    logs = sorted(p.name.split("_")[1] for p in (out / ".submitit").glob("*/*_log.out"))
    assert logs == ["0", "1"]  # one job, two tasks
    plain, ranks = losses(plain_train_run), losses(run)
    assert plain.keys() == ranks.keys()
    assert all(ranks[key] == pytest.approx(value, rel=1e-4) for key, value in plain.items())
    assert max_weight_diff(plain_train_run, run) < 1e-4


def test_a_host_that_fails_mid_training_is_requeued_and_resumes_to_the_uninterrupted_result(
    smoke_run, zero3_across_hosts, shared
):
    out = copy_zoo(smoke_run.out, shared / "run")
    log = shared / "job.out"
    job = submit_train(out, log, *ZERO3)
    latest = out / "generator" / "ae_checkpoint" / "latest.json"
    wait_for(latest.is_file, "the first resume point")
    crashed_at = json.loads(latest.read_text())["step"]
    try:
        ok(
            subprocess.run(
                ["bash", str(SCRIPT), "crash", "pdiff-node2"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        )
        # SLURM finds the host gone (SlurmdTimeout), ends the job NODE_FAIL and requeues it
        # (--requeue)
        wait_for(
            lambda: (
                "pdiff-node2 down" in slurm("sinfo", "-h", "-N", "-o", "%N %t").replace("*", "")
            ),
            "SLURM to mark the host down",
            120,
        )
        wait_for(lambda: job_state(job) == "PENDING", "the job to be requeued", 120)
    finally:
        ok(
            subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=120)
        )  # it reboots
    state = wait_for(lambda: finished(job), f"job {job} after its requeue")
    assert state == "COMPLETED", log.read_text()[-3000:]
    assert int(slurm("scontrol", "show", "job", job, "-o").split("Restarts=")[1].split()[0]) == 1
    resumed = re.findall(r"ae training resumes at step (\d+)/200", log.read_text())
    assert resumed and int(resumed[0]) >= crashed_at
    assert_ranks_on_both_hosts(out)
    assert max_weight_diff(zero3_across_hosts, out) < 1e-6  # as if nothing had happened


@pytest.mark.parametrize(
    "address, message",
    [
        ("pdiff-node9", "the rendezvous host 'pdiff-node9' (MASTER_ADDR) does not resolve here"),
        (
            "10.77.27.99",
            "the rendezvous address 10.77.27.99 (MASTER_ADDR) is not one of this host's addresses",
        ),
    ],
)
def test_a_rendezvous_that_cannot_work_fails_in_seconds_naming_the_host_and_the_setting(
    smoke_run, shared, address, message
):
    out = copy_zoo(smoke_run.out, shared / "run")
    started = time.monotonic()
    job = submit_train(
        out,
        shared / "job.out",
        *ZERO3,
        env=two_host_env(PDIFF_OUTPUT_DIR=str(out), MASTER_ADDR=address),
    )
    state = wait_for(lambda: finished(job), f"job {job}", 120)
    elapsed = time.monotonic() - started
    output = (shared / "job.out").read_text()
    assert state.startswith("FAILED") and elapsed < 60, (state, elapsed)
    assert re.search(r"pdiff: error: rank 0 (on|runs on) host pdiff-node1", output), output[-3000:]
    assert message in output and "set MASTER_ADDR" in output
    assert not (out / "generator" / "generator.json").exists()


def test_the_chain_spreads_its_collection_array_and_its_ranks_over_both_hosts_and_resubmits_only_what_is_missing(
    tmp_path, shared
):
    """The chain on two hosts: 2 collection runs over MaxArraySize 1 (two arrays; 5 GB each, so one
    task fits a host), the generator trained by a rank on each host, the report; then a resubmission
    with nothing to do and one after the report is lost. The zoo equals one collected in this
    process."""
    out = shared / "run"
    args = [
        "experiment=[mnist1d_full,smoke]",
        "threads=1",
        "task.collect.runs=2",
        "cluster.partition=two",
        "cluster.mem_gb=5",
        "cluster.cpus_per_task=1",
        "cluster.timeout_min=10",
        "trainer=deepspeed",
        "cluster.nodes=2",
        "cluster.tasks_per_node=1",
        "data.mnist1d.val_samples=500",
        "data.mnist1d.test_samples=1000",
        *QUICK_EVALUATION,
        f"paths.output_dir={out}",
    ]
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    result = submit([*args, "cluster.max_array_size=1", "--wait"])
    ids = submitted_ids(result.stdout)
    assert list(ids) == ["base", "collect run 0", "collect run 1", "train", "report"]
    arrays = [ids[f"collect run {r}"].split("_")[0] for r in range(2)]
    assert arrays[0] != arrays[1]  # 2 tasks over MaxArraySize=1: two arrays
    nodes = [
        slurm("sacct", "-n", "-X", "-P", "-j", array, "-S", since, "--format=NodeList").split()[-1]
        for array in arrays
    ]
    assert sorted(nodes) == sorted(HOSTS), nodes  # one collection task on each host
    assert_ranks_on_both_hosts(out)
    assert "generated best/mean/min" in result.stdout and (out / "report.json").is_file()
    for job_id in ids.values():
        records = slurm(
            "sacct", "-n", "-X", "-P", "-j", job_id.split("_")[0], "-S", since, "--format=State"
        )
        assert set(records.split()) == {"COMPLETED"}, job_id
    reference = tmp_path / "in_process"
    run_pipeline(compose_config([*args, "stage=collect", f"paths.output_dir={reference}"]))
    cluster, local = ParamZoo.load(out / "zoo"), ParamZoo.load(reference / "zoo")
    assert cluster.k == local.k == 20 and cluster.meta["run_sizes"] == local.meta["run_sizes"] == [
        10,
        10,
    ]
    assert (cluster.vectors == local.vectors).all() and (
        cluster.val_accuracy == local.val_accuracy
    ).all()

    again = submit([*args, "--wait"])
    assert "nothing to do" in again.stdout and "submitted" not in again.stdout
    (out / "report.json").unlink()
    half = submit([*args, "--wait"])
    assert list(submitted_ids(half.stdout)) == ["report"] and (out / "report.json").is_file()


def submit(args: list[str]):
    """launch/submit.py against the two-host cluster, as a user would; asserts it succeeded."""
    return ok(
        subprocess.run(
            [sys.executable, str(REPO / "launch" / "submit.py"), *args],
            capture_output=True,
            text=True,
            timeout=600,
            env=two_host_env(),
            cwd=REPO,
        )
    )


def submitted_ids(stdout: str) -> dict[str, str]:
    return {
        line.split(":")[0].removeprefix("submitted "): line.rsplit(" ", 1)[1]
        for line in stdout.splitlines()
        if line.startswith("submitted ")
    }
