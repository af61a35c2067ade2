"""Faults on a finished run, as a user meets them: nothing written is lost, no folder claims a config it was not
made with, and every refusal is one line naming the key or file."""

from __future__ import annotations

import fcntl
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pdiff import atomic
from pdiff.pipeline.run import LOCK_FILE, run_pipeline
from tests.helpers.configs import REPO, compose_config
from tests.helpers.runs import ok, run_sweep

pytestmark = pytest.mark.slow
SMOKE = ["experiment=smoke", "threads=1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished experiment=smoke run (the latent design), shared: tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("faults") / "run"
    run_pipeline(compose_config([*SMOKE, f"paths.output_dir={out}"]))
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def refused(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "pdiff: error: " in result.stderr, result.stderr[-2000:]
    assert message in result.stderr, result.stderr[-2000:]


def test_a_refused_run_leaves_the_folder_claiming_the_config_that_made_it(run_copy):
    before = (run_copy / "config.yaml").read_text()
    refused(run_sweep([*SMOKE, "task.param.k=30", f"paths.output_dir={run_copy}"]), "task.param.k: 20 -> 30")
    assert (run_copy / "config.yaml").read_text() == before
    assert not (run_copy / ".hydra").exists()


def test_a_second_run_into_a_folder_in_use_is_refused(run_copy):
    with open(run_copy / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.truncate(0)
        lock.write("pid 1 on a test")
        lock.flush()
        before = (run_copy / "config.yaml").read_text()
        refused(run_sweep([*SMOKE, f"paths.output_dir={run_copy}"]), "is in use by another pdiff run (pid 1 on a test)")
        assert (run_copy / "config.yaml").read_text() == before


def test_regenerating_keeps_the_old_models_and_evaluate_refuses_a_mismatch(run_copy):
    old_params = (run_copy / "generated" / "params.safetensors").read_bytes()
    done = ok(run_sweep([*SMOKE, "stage=generate", "generate.n=6", f"paths.output_dir={run_copy}"]))
    assert "generate.n: 20 -> 6" in done.stderr + done.stdout
    assert len(atomic.read_safetensors(run_copy / "generated" / "params.safetensors")["params"]) == 6
    (archive,) = (run_copy / "superseded").glob("generated-*")
    assert (archive / "params.safetensors").read_bytes() == old_params
    refused(run_sweep([*SMOKE, "stage=evaluate", f"paths.output_dir={run_copy}"]), "generate.n: 6 -> 20")
    report = ok(run_sweep([*SMOKE, "stage=evaluate", "generate.n=6", f"paths.output_dir={run_copy}"]))
    assert "(n=6)" in report.stdout
    assert json.loads((run_copy / "report.json").read_text())["generated"]["n"] == 6


def test_a_corrupted_or_missing_generator_file_is_named(run_copy):
    weights = run_copy / "generator" / "autoencoder.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64] ^= 0xFF
    weights.write_bytes(bytes(data))
    args = [*SMOKE, "stage=generate", "generate.n=4", f"paths.output_dir={run_copy}"]
    refused(run_sweep(args), "autoencoder.safetensors does not match its checksum")
    weights.unlink()
    refused(run_sweep(args), "autoencoder.safetensors is missing from the trained generator")


def test_a_diverging_generator_is_never_marked_complete(run_copy):
    shutil.rmtree(run_copy / "generator")
    args = [*SMOKE, "stage=train", "ae.optim.lr=1e6", "ae.optim.warmup_steps=0", f"paths.output_dir={run_copy}"]
    for _ in range(2):  # a rerun does not skip to a later crash: it diverges again, with the same message
        refused(run_sweep(args), "training diverged")
        assert not (run_copy / "generator" / "generator.json").exists()


def test_a_killed_autoencoder_resumes_without_duplicate_metric_rows(run_copy):
    shutil.rmtree(run_copy / "generator")
    metrics = run_copy / "metrics.jsonl"
    args = [*SMOKE, "stage=train", "ae.optim.steps=400", "ae.cadence.save_every=50", "ae.cadence.log_every=10",
            f"paths.output_dir={run_copy}"]
    process = subprocess.Popen([sys.executable, str(REPO / "launch" / "sweep.py"), *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        steps = [json.loads(row).get("ae/step", 0) for row in metrics.read_text().splitlines()]
        if max(steps) >= 70:  # past the resume point at step 50, with rows for 60 and 70 logged
            break
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (run_copy / "generator" / "ae_checkpoint").is_dir()
    ok(run_sweep(args))
    rows = [json.loads(row) for row in metrics.read_text().splitlines()]
    steps = [row["ae/step"] for row in rows if "ae/step" in row][-40:]
    assert steps == list(range(10, 401, 10))
