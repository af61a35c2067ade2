"""A report is a function of its inputs, and a finished run can be checked on a fresh test set.

One tiny MNIST-1D run is evaluated again with its predictions cached, recomputed, its report
deleted, and after a SIGTERM mid-evaluation: report.json comes back byte for byte. Then
`data.mnist1d.test_seed` changes: only the evaluation is redone, with zoo/, generator/ and
generated/ untouched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pdiff.pipeline.run import run_pipeline
from tests.helpers.configs import REPO, TINY, compose_config
from tests.helpers.runs import ok, run_sweep

pytestmark = pytest.mark.slow


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="session")  # once per worker, even when `pytest -n` interleaves modules
def finished(tmp_path_factory):
    """A finished tiny MNIST-1D run and the arguments that made it."""
    base = tmp_path_factory.mktemp("reports")
    args = [
        "experiment=smoke",
        "task=mnist1d_mlp",
        f"data.root={base / 'data'}",
        "data.mnist1d.val_samples=500",
        "data.mnist1d.test_samples=1000",
        "threads=1",
        *TINY,
    ]
    out = base / "run"
    run_pipeline(compose_config([*args, f"paths.output_dir={out}"]))
    return out, args


@pytest.fixture
def run_copy(finished, tmp_path):
    out, args = finished
    shutil.copytree(out, tmp_path / "run")
    return tmp_path / "run", [*args, f"paths.output_dir={tmp_path / 'run'}"]


def evaluate(args: list[str]) -> dict:
    return run_pipeline(compose_config([*args, "stage=evaluate"]))


def test_the_same_folder_evaluated_again_gives_the_same_report_bytes(run_copy):
    out, args = run_copy
    original = (out / "report.json").read_bytes()
    evaluate(args)  # cached predictions
    assert (out / "report.json").read_bytes() == original
    (out / "report.json").unlink()
    evaluate(args)  # a deleted report, remade
    assert (out / "report.json").read_bytes() == original
    (out / "eval" / "predictions.safetensors").unlink()
    evaluate(args)  # predictions recomputed
    assert (out / "report.json").read_bytes() == original
    assert (out / "report.md").read_text().count("\n") > 10


def test_an_evaluation_stopped_by_sigterm_and_rerun_gives_the_same_report(run_copy):
    out, args = run_copy
    original = (out / "report.json").read_bytes()
    (out / "report.json").unlink()
    (out / "eval" / "predictions.safetensors").unlink()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "sweep.py"), *args, "stage=evaluate"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while (
        time.monotonic() < deadline
        and process.poll() is None
        and not (out / ".pdiff.lock").read_text()
    ):
        time.sleep(0.01)
    time.sleep(1.0)  # into the evaluation: the data and the models are being loaded and predicted
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    assert not (out / "report.json").exists(), "the evaluation ended before the SIGTERM reached it"
    ok(run_sweep([*args, "stage=evaluate"]))
    assert (out / "report.json").read_bytes() == original


def test_a_finished_run_is_evaluated_on_a_fresh_test_set_without_touching_its_models(run_copy):
    out, args = run_copy
    before = {part: folder_digest(out / part) for part in ("zoo", "generator", "generated")}
    original = json.loads((out / "report.json").read_text())
    result = ok(run_sweep([*args, "stage=evaluate", "data.mnist1d.test_seed=4242"]))
    assert (
        "test_data.mnist1d.test_seed: 2042 -> 4242" in result.stdout + result.stderr
    )  # eval/ made again
    assert {part: folder_digest(out / part) for part in before} == before
    fresh = json.loads((out / "report.json").read_text())
    assert fresh["n_test"] == original["n_test"] == 1000
    assert fresh["generated"]["mean"] != original["generated"]["mean"]
    assert fresh["original"]["mean"] != original["original"]["mean"]
    (archive,) = (out / "superseded").glob("eval-*")  # the first test set's predictions, kept aside
    assert (archive / "predictions.safetensors").is_file()
    ok(run_sweep([*args, "stage=evaluate"]))  # back to the first test set: its own numbers again
    assert json.loads((out / "report.json").read_text())["generated"] == original["generated"]


def test_a_run_scored_on_validation_says_so_and_scores_the_validation_split(run_copy):
    out, args = run_copy
    evaluate([*args, "evaluate.split=val"])
    report = json.loads((out / "report.json").read_text())
    assert report["split"] == "val" and report["n_test"] == 500  # data.mnist1d.val_samples
    # every population is scored on the validation split: the generated models' "test" accuracy is
    # their validation accuracy
    assert report["generated"]["mean"] == report["validation"]["generated"]["mean"]
    assert report["original"]["mean"] == report["validation"]["original"]["mean"]
    assert "500 **validation** samples" in (out / "report.md").read_text()
