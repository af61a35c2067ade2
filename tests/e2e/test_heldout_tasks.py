"""A zoo of many tasks end to end at a tiny size (in-process, as launch/sweep.py runs it): every
held-out task gets every baseline, held-out labels are read only by evaluate, generate.task makes
one task's models, and the benchmark writes its JSON."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from pdiff import atomic
from pdiff.errors import ConfigError
from pdiff.heldout.evaluate import BASELINES, REFERENCE
from pdiff.heldout.families import SubsetFamily
from pdiff.pipeline.run import run_pipeline
from tests.helpers.configs import REPO, compose_config

pytestmark = pytest.mark.slow
SIZE = [
    "task.base.epochs=2",
    "task.family.train_tasks=12",
    "task.family.held_out=3",
    "task.family.checkpoints=2",
    "task.family.epochs=1",
    "task.collect.runs=2",
    "generator.optim.steps=60",
    "generator.optim.warmup_steps=10",
    "generator.pca_components=8",
    "denoiser.width=32",
    "generate.n=4",
    "sampler.steps=10",
    "data.mnist1d.num_samples=1000",
    "data.mnist1d.val_samples=500",
    "data.mnist1d.test_samples=1000",
]
STAGE_DIRS = ("zoo", "generator", "generated")


def tiny(tmp_path, *overrides):
    return ["experiment=heldout_subsets", *SIZE, f"data.root={tmp_path / 'data'}", *overrides]


def _files(directory) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for stage in STAGE_DIRS
        for path in sorted((directory / stage).rglob("*"))
        if path.is_file()
    }


def test_held_out_tasks_get_every_baseline_and_their_labels_are_read_only_by_evaluate(
    tmp_path, monkeypatch
):
    out, first = tmp_path / "run", tmp_path / "first"
    cfg = compose_config(tiny(tmp_path, f"paths.output_dir={out}"))
    held_out = SubsetFamily(10).split(cfg.task.family).held_out
    report = run_pipeline(cfg)
    assert [row["task"] for row in report["rows"]] == held_out
    assert set(report["split_check"].values()) == {0}
    for row in report["rows"]:
        assert set(row["baselines"]) == {REFERENCE, *BASELINES} and row["distance"] >= 1
        assert 0 <= row["generated_mean"] <= 100
    assert set(report["summary"]) == {REFERENCE, *BASELINES}
    assert all(
        entry["low"] <= entry["margin"] <= entry["high"] for entry in report["summary"].values()
    )
    assert (out / "report.md").is_file() and (out / "heldout_margins.png").stat().st_size > 10_000
    zoo = atomic.read_safetensors(out / "zoo" / "zoo.safetensors")
    assert not set(zoo["task"].tolist()) & set(held_out) and zoo["descriptor"].shape == (24, 10)
    generated = atomic.read_safetensors(out / "generated" / "params.safetensors")
    assert generated["task"].tolist() == [code for code in held_out for _ in range(4)]
    assert generated["control_params"].shape == generated["params"].shape
    shutil.move(out, first)

    labels = SubsetFamily.labels

    def permuted_for_held_out(
        self, code, y
    ):  # the held-out tasks' labels shuffled; the training tasks' kept
        own = labels(self, code, y)
        if code not in held_out:
            return own
        return own[torch.randperm(len(own), generator=torch.Generator().manual_seed(code))]

    monkeypatch.setattr(SubsetFamily, "labels", permuted_for_held_out)
    again = run_pipeline(cfg)
    before, after = _files(first), _files(out)
    assert "zoo/zoo.safetensors" in before and "generated/params.safetensors" in before
    assert before.keys() == after.keys()
    assert [name for name in before if before[name] != after[name]] == []
    assert [row["baselines"][REFERENCE] for row in report["rows"]] != [
        row["baselines"][REFERENCE] for row in again["rows"]
    ]  # evaluate did read the permuted labels


def test_generate_task_makes_models_for_one_named_task_and_evaluate_scores_it(tmp_path):
    out, family = tmp_path / "run", SubsetFamily(10)
    run_pipeline(compose_config(tiny(tmp_path, "stage=collect", f"paths.output_dir={out}")))
    run_pipeline(compose_config(tiny(tmp_path, "stage=train", f"paths.output_dir={out}")))
    run_pipeline(
        compose_config(
            tiny(tmp_path, "stage=generate", "generate.task=[0,3,7]", f"paths.output_dir={out}")
        )
    )
    generated = atomic.read_safetensors(out / "generated" / "params.safetensors")
    assert (
        generated["task"].tolist() == [0b10001001] * 4 and generated["control_params"].shape[0] == 0
    )
    assert json.loads((out / "generated" / "generated.json").read_text())["tasks"] == [0b10001001]

    split = family.split(compose_config(tiny(tmp_path)).task.family)
    held_out, trained = (
        f"generate.task=[{','.join(map(str, family.classes_of(code)))}]"
        for code in (split.held_out[1], split.train[0])
    )
    report = run_pipeline(
        compose_config(tiny(tmp_path, held_out, f"paths.output_dir={out}"))
    )  # generate, evaluate
    assert [row["task"] for row in report["rows"]] == [split.held_out[1]]
    assert set(report["summary"]) == {REFERENCE, *BASELINES} - {
        "random_descriptor"
    }  # no controls were made
    assert {entry["status"] for entry in report["summary"].values()} == {
        "ties"
    }  # one task: no interval
    made = {path: path.read_bytes() for path in [out / "report.json", *(out / "eval").iterdir()]}
    with pytest.raises(ConfigError, match="is not one of the split's held-out tasks"):
        run_pipeline(
            compose_config(tiny(tmp_path, "stage=evaluate", trained, f"paths.output_dir={out}"))
        )
    assert {path: path.read_bytes() for path in made} == made and not list(
        (out / "superseded").glob("eval-*")
    )


def test_the_benchmark_writes_a_row_for_every_held_out_task_with_every_baseline(tmp_path):
    out, work = tmp_path / "bench.json", tmp_path / "work"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/heldout_tasks.py",
            "--out",
            str(out),
            "--work",
            str(work),
            "--seeds",
            "1",
            "--splits",
            "pair",
            "--",
            *SIZE,
            f"data.root={tmp_path / 'data'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads(out.read_text())
    assert {(row["split"], row["seed"]) for row in bench["rows"]} == {("pair", 1)} and len(
        bench["rows"]
    ) == 3
    assert all(set(row["baselines"]) == {REFERENCE, *BASELINES} for row in bench["rows"])
    assert len(bench["summary"]) == 1 + len(BASELINES)
    assert all(
        value == 0
        for check in bench["split_check"]
        for key, value in check.items()
        if key.endswith("_in_training")
    )
    assert "nearest_symmetric" in result.stdout and "tasks): generated" in result.stdout
