"""Zoos of many tasks end to end at a tiny size (in-process, as launch/sweep.py runs it), both
families: every scored task gets every baseline, held-out tasks' labels (and, for variants, their
signals) are read only by evaluate, validation and test tasks are scored apart, generate.task makes
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
from pdiff.heldout.evaluate import REFERENCE, baseline_names
from pdiff.heldout.subsets import SubsetFamily
from pdiff.heldout.variants import VariantFamily
from pdiff.pipeline.run import run_pipeline
from tests.helpers.configs import REPO, compose_config
from tests.helpers.runs import stage_files

pytestmark = pytest.mark.slow
SIZE = [
    "task.base.epochs=2",
    "task.family.train_tasks=12",
    "task.family.held_out=3",
    "task.family.val_tasks=2",
    "task.family.checkpoints=2",
    "task.family.epochs=1",
    "task.family.task_samples=800",
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


def tiny(tmp_path, *overrides, family="subsets"):
    return [f"experiment=heldout_{family}", *SIZE, f"data.root={tmp_path / 'data'}", *overrides]


def _check_report(report, family, scored):
    names = {REFERENCE, *baseline_names(family, [0, 10, 30, 100])}
    assert [row["task"] for row in report["rows"]] == scored
    assert set(report["split_check"].values()) == {0}
    for row in report["rows"]:
        assert set(row["baselines"]) == names and row["distance"] > 0
        assert 0 <= row["generated_mean"] <= 100
        assert set(row["memorization"]) >= {"generated_head_to_zoo", "trained_head_to_zoo"}
    assert set(report["summary"]) == names
    assert all(
        entry["low"] <= entry["margin"] <= entry["high"] for entry in report["summary"].values()
    )
    assert (
        list(report["worth"]["curve"]) == sorted(report["worth"]["curve"], key=int)
        and "generated" in report["worth"]
    )


def _rerun_with_held_out_changed(cfg, out, first, report, monkeypatch, owner, method, changed):
    """Run again with the held-out tasks' data replaced by `changed`: everything before evaluate is
    the same bit for bit, and evaluate did read the change."""
    shutil.move(out, first)
    monkeypatch.setattr(owner, method, changed)
    again = run_pipeline(cfg)
    before, after = stage_files(first, STAGE_DIRS), stage_files(out, STAGE_DIRS)
    assert "zoo/zoo.safetensors" in before and "generated/params.safetensors" in before
    assert before.keys() == after.keys()
    assert [name for name in before if before[name] != after[name]] == []
    assert [row["baselines"][REFERENCE] for row in report["rows"]] != [
        row["baselines"][REFERENCE] for row in again["rows"]
    ]


def test_subset_tasks_get_every_baseline_and_their_labels_are_read_only_by_evaluate(
    tmp_path, monkeypatch
):
    out, first = tmp_path / "run", tmp_path / "first"
    cfg = compose_config(tiny(tmp_path, f"paths.output_dir={out}"))
    family = SubsetFamily(10)
    split = family.split(cfg.task.family, seed=cfg.seed)
    report = run_pipeline(cfg)
    _check_report(report, family, split.test)
    assert (out / "report.md").is_file() and (out / "heldout_margins.png").stat().st_size > 10_000
    zoo = atomic.read_safetensors(out / "zoo" / "zoo.safetensors")
    assert not set(zoo["task"].tolist()) & set(split.held_out)
    assert zoo["descriptor"].shape == (24, 10)
    generated = atomic.read_safetensors(out / "generated" / "params.safetensors")
    assert generated["task"].tolist() == [code for code in split.held_out for _ in range(4)]
    assert generated["control_params"].shape == generated["params"].shape
    assert set(generated["control_task"].tolist()) <= set(split.unused)

    labels = SubsetFamily.labels

    def permuted_for_held_out(self, code, y):  # held-out labels shuffled; training tasks' kept
        own = labels(self, code, y)
        if code not in split.held_out:
            return own
        return own[torch.randperm(len(own), generator=torch.Generator().manual_seed(code))]

    _rerun_with_held_out_changed(
        cfg, out, first, report, monkeypatch, SubsetFamily, "labels", permuted_for_held_out
    )


def test_variant_tasks_are_scored_inside_and_outside_the_range_and_their_data_is_read_only_by_evaluate(
    tmp_path, monkeypatch
):
    out, first = tmp_path / "run", tmp_path / "first"
    cfg = compose_config(tiny(tmp_path, f"paths.output_dir={out}", family="variants"))
    family = VariantFamily(cfg.data.mnist1d, cfg.data.root, 800)
    split = family.split(cfg.task.family, seed=cfg.seed)
    report = run_pipeline(cfg)
    _check_report(report, family, split.test)
    assert {row["region"] for row in report["rows"]} == {
        "inside (interpolation)",
        "outside (extrapolation)",
    }
    zoo = atomic.read_safetensors(out / "zoo" / "zoo.safetensors")
    assert zoo["descriptor"].shape == (24, 3) and zoo["params"].shape[1] == 2698  # a 10-class head
    markdown = (out / "report.md").read_text()
    assert "outside (extrapolation)" in markdown and "labelled SGD steps" in markdown

    task_data = VariantFamily.task_data

    def permuted_for_held_out(self, task, data, with_test=False):  # held-out data shuffled apart
        own = task_data(self, task, data, with_test)
        if task not in split.held_out:
            return own
        generator = torch.Generator().manual_seed(task)
        shuffle = lambda t: t[torch.randperm(len(t), generator=generator)]  # noqa: E731
        return type(own)(*(shuffle(t) for t in vars(own).values() if torch.is_tensor(t)), 10)

    _rerun_with_held_out_changed(
        cfg, out, first, report, monkeypatch, VariantFamily, "task_data", permuted_for_held_out
    )


def test_validation_tasks_are_scored_apart_from_the_test_tasks_with_the_same_models(tmp_path):
    out = tmp_path / "run"
    cfg = compose_config(tiny(tmp_path, f"paths.output_dir={out}"))
    split = SubsetFamily(10).split(cfg.task.family, seed=cfg.seed)
    test = run_pipeline(cfg)
    made = stage_files(out, STAGE_DIRS)
    val = run_pipeline(
        compose_config(tiny(tmp_path, "task.family.eval_split=val", f"paths.output_dir={out}"))
    )
    assert [row["task"] for row in val["rows"]] == split.val and val["eval_split"] == "val"
    assert [row["task"] for row in test["rows"]] == split.test
    assert (
        stage_files(out, STAGE_DIRS) == made
    )  # the zoo, generator and generated models are shared


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

    cfg = compose_config(tiny(tmp_path))
    split = family.split(cfg.task.family, seed=cfg.seed)
    held_out, trained = (
        f"generate.task=[{','.join(map(str, family.classes_of(code)))}]"
        for code in (split.test[1], split.train[0])
    )
    report = run_pipeline(
        compose_config(tiny(tmp_path, held_out, f"paths.output_dir={out}"))
    )  # generate, evaluate
    assert [row["task"] for row in report["rows"]] == [split.test[1]]
    assert set(report["summary"]) == {REFERENCE, *baseline_names(family, [0, 10, 30, 100])} - {
        "random_descriptor",
        "shuffled_descriptor",
    }  # no controls were made
    assert {entry["status"] for entry in report["summary"].values()} == {
        "ties"
    }  # one task: no interval
    made = {path: path.read_bytes() for path in [out / "report.json", *(out / "eval").iterdir()]}
    with pytest.raises(ConfigError, match="is not one of the split's test tasks"):
        run_pipeline(
            compose_config(tiny(tmp_path, "stage=evaluate", trained, f"paths.output_dir={out}"))
        )
    assert {path: path.read_bytes() for path in made} == made and not list(
        (out / "superseded").glob("eval-*")
    )


def test_the_benchmark_writes_a_row_for_every_test_task_with_every_baseline(tmp_path):
    out, work = tmp_path / "bench.json", tmp_path / "work"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/unseen_tasks.py",
            "--out",
            str(out),
            "--work",
            str(work),
            "--family",
            "variants",
            "--seeds",
            "1",
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
    names = {REFERENCE, *baseline_names(VariantFamily(None, None, 800), [0, 10, 30, 100])}
    assert {(row["split"], row["seed"], row["split_seed"]) for row in bench["rows"]} == {
        ("range", 1, 1)
    }
    assert len(bench["rows"]) == 3 and all(set(row["baselines"]) == names for row in bench["rows"])
    assert len(bench["summary"]) == len(names) and len(bench["worth"]) == 1
    assert all(
        value == 0
        for check in bench["split_check"]
        for key, value in check.items()
        if key not in ("family", "split", "seed")
    )
    assert "ridge" in result.stdout and "labelled SGD steps" in result.stdout
