"""Faults on a finished run, as a user meets them: nothing written is lost, no folder claims a
config it was not made with, and every refusal is one line naming the key or file."""

from __future__ import annotations

import fcntl
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pdiff import atomic
from pdiff.errors import ConfigError, GeneratorError, ZooError
from pdiff.pipeline.output_dir import LOCK_FILE
from pdiff.pipeline.run import run_pipeline
from tests.helpers.configs import REPO, compose_config
from tests.helpers.runs import ok, run_sweep

pytestmark = pytest.mark.slow
SMOKE = ["experiment=smoke", "task=digits_cnn", "threads=1"]


@pytest.fixture(scope="session")  # once per worker, even when `pytest -n` interleaves modules
def finished(tmp_path_factory):
    """One finished experiment=smoke run (the latent design), shared: tests that change it work on a
    copy."""
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
    assert "Traceback" not in result.stderr and "pdiff: error: " in result.stderr, result.stderr[
        -2000:
    ]
    assert message in result.stderr, result.stderr[-2000:]


def test_a_refused_run_leaves_the_folder_claiming_the_config_that_made_it(run_copy):
    before = (run_copy / "config.yaml").read_text()
    refused(
        run_sweep([*SMOKE, "task.param.k=30", f"paths.output_dir={run_copy}"]),
        "task.param.k: 20 -> 30",
    )
    assert (run_copy / "config.yaml").read_text() == before
    assert not (run_copy / ".hydra").exists()


def test_a_second_run_into_a_folder_in_use_is_refused(run_copy):
    with open(run_copy / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.truncate(0)
        lock.write("pid 1 on a test")
        lock.flush()
        before = (run_copy / "config.yaml").read_text()
        refused(
            run_sweep([*SMOKE, f"paths.output_dir={run_copy}"]),
            "is in use by another pdiff run (pid 1 on a test)",
        )
        assert (run_copy / "config.yaml").read_text() == before


def test_regenerating_keeps_the_old_models_and_evaluate_refuses_a_mismatch(run_copy):
    old_params = (run_copy / "generated" / "params.safetensors").read_bytes()
    done = ok(run_sweep([*SMOKE, "stage=generate", "generate.n=6", f"paths.output_dir={run_copy}"]))
    assert "generate.n: 20 -> 6" in done.stderr + done.stdout
    assert (
        "generate: sampling 6 models of 128 parameters (0.00 GiB)" in done.stderr + done.stdout
    )  # size first
    assert (
        len(atomic.read_safetensors(run_copy / "generated" / "params.safetensors")["params"]) == 6
    )
    (archive,) = (run_copy / "superseded").glob("generated-*")
    assert (archive / "params.safetensors").read_bytes() == old_params
    (evaluation,) = (run_copy / "superseded").glob(
        "eval-*"
    )  # the n=20 report goes aside with its models
    moved = {path.name for path in evaluation.iterdir()}
    assert {"report.json", "report.md", "accuracy.png", "predictions.safetensors"} <= moved
    assert not (run_copy / "report.json").exists() and not list(run_copy.glob("*.png"))
    assert not (run_copy / "eval").exists() or not any((run_copy / "eval").iterdir())
    refused(
        run_sweep([*SMOKE, "stage=evaluate", f"paths.output_dir={run_copy}"]), "generate.n: 6 -> 20"
    )
    report = ok(
        run_sweep([*SMOKE, "stage=evaluate", "generate.n=6", f"paths.output_dir={run_copy}"])
    )
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
    args = [
        *SMOKE,
        "stage=train",
        "ae.optim.lr=1e6",
        "ae.optim.warmup_steps=0",
        f"paths.output_dir={run_copy}",
    ]
    for _ in range(
        2
    ):  # a rerun does not skip to a later crash: it diverges again, with the same message
        refused(run_sweep(args), "training diverged")
        assert not (run_copy / "generator" / "generator.json").exists()


def test_a_killed_autoencoder_resumes_without_duplicate_metric_rows(run_copy):
    shutil.rmtree(run_copy / "generator")
    metrics = run_copy / "metrics.jsonl"
    args = [
        *SMOKE,
        "stage=train",
        "ae.optim.steps=400",
        "ae.cadence.save_every=50",
        "ae.cadence.log_every=10",
        f"paths.output_dir={run_copy}",
    ]
    process = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "sweep.py"), *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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


# Round 3 (issue 25): what a user meets on the command line and on a finished folder.


def test_a_failed_generation_keeps_the_good_models_and_the_config_that_made_them(run_copy):
    params = (run_copy / "generated" / "params.safetensors").read_bytes()
    config = (run_copy / "config.yaml").read_text()
    (run_copy / "generator" / "autoencoder.safetensors").unlink()
    refused(
        run_sweep([*SMOKE, "stage=generate", "generate.n=40", f"paths.output_dir={run_copy}"]),
        "autoencoder.safetensors is missing from the trained generator",
    )
    assert (run_copy / "generated" / "params.safetensors").read_bytes() == params
    assert (run_copy / "config.yaml").read_text() == config and not (
        run_copy / "superseded"
    ).exists()


def test_evaluating_models_made_with_another_n_is_refused_before_the_config_is_rewritten(run_copy):
    ok(run_sweep([*SMOKE, "stage=generate", "generate.n=6", f"paths.output_dir={run_copy}"]))
    config = (run_copy / "config.yaml").read_text()
    refused(
        run_sweep([*SMOKE, "stage=evaluate", f"paths.output_dir={run_copy}"]), "generate.n: 6 -> 20"
    )
    assert (run_copy / "config.yaml").read_text() == config and "n: 6" in config


def test_deleted_inputs_files_fall_back_to_the_record_each_stage_wrote_last(run_copy):
    for inputs in run_copy.glob("*/inputs.json"):
        inputs.unlink()
    refused(
        run_sweep([*SMOKE, "task.param.k=30", f"paths.output_dir={run_copy}"]),
        "task.param.k: 20 -> 30",
    )
    assert not list(run_copy.glob("*/inputs.json"))  # nothing claims a config it was not made with
    ok(
        run_sweep([*SMOKE, f"paths.output_dir={run_copy}"])
    )  # the config that made it, as the message advises
    assert (run_copy / "zoo" / "inputs.json").is_file() and (
        run_copy / "generator" / "inputs.json"
    ).is_file()


def test_a_zoo_json_with_swapped_spec_names_is_refused(run_copy):
    meta = json.loads((run_copy / "zoo" / "zoo.json").read_text())
    first, second = meta["spec"][0]["name"], meta["spec"][1]["name"]
    meta["spec"][0]["name"], meta["spec"][1]["name"] = second, first
    (run_copy / "zoo" / "zoo.json").write_text(json.dumps(meta))
    refused(
        run_sweep([*SMOKE, "stage=evaluate", f"paths.output_dir={run_copy}"]),
        "zoo.json does not match its own checksum",
    )


def test_a_broken_generator_inputs_file_is_named(run_copy):
    (run_copy / "generator" / "inputs.json").write_text("{broken")
    refused(
        run_sweep([*SMOKE, "stage=generate", f"paths.output_dir={run_copy}"]),
        f"{run_copy / 'generator' / 'inputs.json'} is not valid JSON",
    )


def test_another_design_on_a_finished_folder_is_named_as_such(run_copy):
    result = run_sweep([*SMOKE, "generator=flow", f"paths.output_dir={run_copy}"])
    refused(result, "generator.design: 'latent' -> 'flow'")
    assert "ae." not in result.stderr.split("pdiff: error: ")[1]


def test_a_run_file_of_another_collection_is_not_merged(tmp_path):
    """Two collections of two runs each, at another lr; one run file of the second put into the
    first."""
    folders = {lr: tmp_path / f"lr{lr}" for lr in ("0.01", "0.02")}
    for lr, out in folders.items():
        ok(
            run_sweep(
                [
                    *SMOKE,
                    "stage=collect",
                    "task.collect.runs=2",
                    f"task.collect.lr={lr}",
                    f"paths.output_dir={out}",
                ]
            )
        )
    mine, other = folders["0.01"] / "zoo", folders["0.02"] / "zoo"
    shutil.copy2(
        other / "runs" / "run-0001-of-0002.safetensors",
        mine / "runs" / "run-0001-of-0002.safetensors",
    )
    (mine / "zoo.json").unlink()
    (mine / "zoo.safetensors").unlink()
    refused(
        run_sweep(
            [
                *SMOKE,
                "stage=collect",
                "task.collect.runs=2",
                "task.collect.lr=0.01",
                f"paths.output_dir={folders['0.01']}",
            ]
        ),
        "run-0001-of-0002.safetensors (another config) was not collected by this collection",
    )
    assert not (mine / "zoo.json").exists()


def test_an_npz_rewritten_at_the_same_path_is_never_mixed_with_the_zoo_made_from_it(tmp_path):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x[:1200], y_train=y[:1200], x_test=x[1200:], y_test=y[1200:])
    out = tmp_path / "run"
    args = [
        "experiment=smoke",
        "task=npz_mlp",
        f"data.path={path}",
        "threads=1",
        "task.param.k=10",
        "evaluate.baselines.average_of=4",
        "generate.n=8",
        f"paths.output_dir={out}",
    ]
    ok(run_sweep(args))
    report = (out / "report.json").read_bytes()
    np.savez(path, x_train=x[:1200][::-1], y_train=y[:1200][::-1], x_test=x[1200:], y_test=y[1200:])
    refused(run_sweep(args), "data.train_sha256")
    np.savez(path, x_train=x[:1200], y_train=y[:1200], x_test=x[1200:][::-1], y_test=y[1200:][::-1])
    done = ok(
        run_sweep([*args, "stage=evaluate"])
    )  # the same training data, another test part: evaluate again
    assert "test_data.sha256" in done.stdout + done.stderr
    assert (out / "report.json").read_bytes() != report


@pytest.mark.parametrize(
    "override, message",
    [
        (
            f"seed={2**63}",
            f"pdiff: error: seed={2**63} is invalid: must be an integer in [0, 2**63 - 1]",
        ),
        ("paths.output_dir=/tmp/pdiff-é", "must be quoted: 'paths.output_dir=\"/tmp/pdiff-é\"'"),
    ],
)
def test_command_line_mistakes_get_one_line_and_write_nothing(tmp_path, override, message):
    out = tmp_path / "run"
    args = (
        [*SMOKE, f"paths.output_dir={out}", override]
        if "output_dir" not in override
        else [*SMOKE, override]
    )
    result = run_sweep(args)
    refused(result, message)
    assert (
        len([line for line in result.stderr.splitlines() if line.startswith("pdiff: error")]) == 1
    )
    assert not (out / "config.yaml").exists() and not (out / "zoo").exists()


def test_an_output_folder_pdiff_did_not_make_or_a_dangling_link_is_refused(tmp_path):
    mine = tmp_path / "papers"
    mine.mkdir()
    (mine / "draft.tex").write_text("...")
    refused(
        run_sweep([*SMOKE, f"paths.output_dir={mine}"]),
        "is a folder pdiff did not make, holding draft.tex",
    )
    assert sorted(path.name for path in mine.iterdir()) == ["draft.tex"]
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    refused(run_sweep([*SMOKE, f"paths.output_dir={link}"]), "is a dangling symbolic link")


# Round 4 (issue 36): every refusal before config.yaml is written; every file the report depends on
# checked by digest.


def _refused_in_process(overrides: list[str], error: type, message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        run_pipeline(compose_config([*SMOKE, *overrides]))
    assert "\n" not in str(raised.value)


def test_replaced_or_truncated_generated_models_are_refused_and_nothing_is_rewritten(
    run_copy, tmp_path
):
    before = {
        path: path.read_bytes()
        for path in (
            run_copy / "report.json",
            run_copy / "config.yaml",
            run_copy / "eval" / "predictions.safetensors",
        )
    }
    params = run_copy / "generated" / "params.safetensors"
    other = atomic.read_safetensors(params)
    atomic.write_safetensors(
        params, {"params": other["params"].flip(0)}
    )  # another run's file, the same shape
    evaluate = ["stage=evaluate", f"paths.output_dir={run_copy}"]
    _refused_in_process(
        evaluate, GeneratorError, "params.safetensors that is not the one generated.json describes"
    )
    params.write_bytes(params.read_bytes()[:1000])  # truncated: no SafetensorError traceback
    _refused_in_process(
        evaluate, GeneratorError, "params.safetensors that is not the one generated.json describes"
    )
    forty = tmp_path / "forty"  # 6 models and their generated.json, put into this 20-model folder
    shutil.copytree(run_copy, forty)
    run_pipeline(
        compose_config([*SMOKE, "stage=generate", "generate.n=6", f"paths.output_dir={forty}"])
    )
    for name in ("params.safetensors", "generated.json"):
        shutil.copy2(forty / "generated" / name, run_copy / "generated" / name)
    _refused_in_process(
        evaluate,
        GeneratorError,
        r"generated.json of models made with another config \(generate.n: 6 "
        "-> 20",
    )
    assert {path: path.read_bytes() for path in before} == before and not (
        run_copy / "superseded"
    ).exists()
    run_pipeline(
        compose_config([*SMOKE, "stage=generate", f"paths.output_dir={run_copy}"])
    )  # made again
    assert len(list((run_copy / "superseded").glob("generated-*"))) == 1


def test_a_swapped_base_model_is_refused_whether_or_not_eval_is_cached(run_copy, tmp_path):
    base = run_copy / "zoo" / "base_model.safetensors"
    atomic.write_safetensors(
        base, {name: tensor + 0.01 for name, tensor in atomic.read_safetensors(base).items()}
    )
    report = (run_copy / "report.json").read_bytes()
    for _ in range(2):
        _refused_in_process(
            ["stage=evaluate", f"paths.output_dir={run_copy}"],
            ZooError,
            "base_model.safetensors does not match the checksum recorded in",
        )
        shutil.rmtree(run_copy / "eval", ignore_errors=True)
    assert (run_copy / "report.json").read_bytes() == report


@pytest.mark.parametrize("damage", ["generator file", "wandb id", "generated inputs"])
def test_a_refused_run_never_rewrites_config_yaml(damage, run_copy):
    """Each route once refused only after config.yaml said n=40 while the folder held n=20."""
    config = (run_copy / "config.yaml").read_bytes()
    args = ["generate.n=40", f"paths.output_dir={run_copy}"]
    if damage == "generator file":
        (run_copy / "generator" / "autoencoder.safetensors").unlink()
        _refused_in_process(
            args, GeneratorError, "autoencoder.safetensors is missing from the trained generator"
        )
    elif damage == "wandb id":
        (run_copy / "wandb_run_id.txt").write_text("not an id!\n")
        _refused_in_process(
            ["logger=wandb", *args], ConfigError, "wandb_run_id.txt holds 'not an id!'"
        )
    else:
        (run_copy / "generated" / "inputs.json").write_text("{broken")
        _refused_in_process(
            ["stage=generate", *args], ZooError, "generated/inputs.json is not valid JSON"
        )
    assert (run_copy / "config.yaml").read_bytes() == config
