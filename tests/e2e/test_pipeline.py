"""The real pipeline, run as a user runs it (launch/sweep.py in a subprocess), at a tiny size."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from pdiff.jobs import pending_jobs
from tests import wandb_log
from tests.conftest import CONFIGS, compose_config, ok, run_sweep

pytestmark = pytest.mark.slow
REPORT_KEYS = {"task", "k", "param_count", "original", "generated", "timings_s", "memorization", "verdict",
               "validation", "n_test", "keep_best", "cost"}
MEMORIZATION_KEYS = {"nn_l2_mean", "max_iou_mean", "acc_mean", "novel_fraction"}
POPULATIONS = {"originals", "generated", "noise_0.001", "noise_0.05", "noise_0.15", "gaussian", "average16", "average",
               "interpolation", "selected_top1", "selected_5pct", "selected_10pct", "selected_25pct",
               "selected_average16", "selected_noise_0.001", "selected_noise_0.15"}
FAMILIES = ("noise", "selected_noise", "gaussian", "average16", "average", "interpolation", "selected_top1",
            "selected_5pct", "selected_10pct", "selected_25pct", "selected_average16")
STAT_KEYS = {"n", "best", "mean", "median", "min", "std"}


def test_smoke_pipeline_end_to_end_then_skips_done_work(tmp_path):
    out = tmp_path / "run"
    first = ok(run_sweep(["experiment=smoke", f"paths.output_dir={out}"]))
    assert "pdiff: digits_cnn K=20 D=128" in first.stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report) == REPORT_KEYS
    assert set(report["original"]) == STAT_KEYS and set(report["generated"]) == STAT_KEYS
    assert report["original"]["n"] == 20 and report["generated"]["n"] == 20 and report["param_count"] == 128
    assert report["generated"]["mean"] > 90.0  # generated BatchNorm layers give working networks
    assert {"collect", "train_autoencoder", "train_diffusion", "generate", "evaluate"} <= set(report["timings_s"])
    timings = report["timings_s"]
    cost = report["cost"]  # one shared base model and one collection run: the run's SGD time over its 20 checkpoints
    assert cost["sgd_per_checkpoint_s"] == pytest.approx((timings["collect_base"] + timings["collect_run_0"]) / 20,
                                                         abs=1e-3)
    picked = report["keep_best"]  # one run: the trained pool is its 20 checkpoints
    zoo_val = json.loads((out / "zoo" / "zoo.json").read_text())["val_accuracy"]
    assert picked["n"] == 20 and picked["trained"]["kept_val"] == pytest.approx(max(zoo_val), abs=1e-3)
    assert "## Picking a model as a user would" in (out / "report.md").read_text()
    memo = report["memorization"]
    assert set(memo) >= POPULATIONS and any(name.startswith("noise_matched_") for name in memo)
    assert all(set(memo[name]) >= MEMORIZATION_KEYS for name in POPULATIONS)
    assert memo["noise_0.001"]["max_iou_mean"] > 0.99 and memo["noise_0.001"]["novel_fraction"] == 0.0
    verdict = report["verdict"]
    assert tuple(verdict["families"]) == FAMILIES
    for family in FAMILIES:
        entry = verdict[family]
        assert entry["status"] in ("beats", "ties", "loses") and entry["low"] <= entry["high"]
        assert isinstance(entry["acc_margin"], float) and entry["beats"] == (entry["status"] == "beats")
    assert verdict["novel_fraction"] == memo["generated"]["novel_fraction"]
    assert verdict["beats_all"] == all(verdict[f]["status"] == "beats" for f in FAMILIES)
    assert report["n_test"] == 539 and report["validation"]["original"]["n"] == 20
    assert all(len(memo[name]["acc_interval"]) == 2 for name in POPULATIONS)
    markdown = (out / "report.md").read_text()
    assert "generated models" in markdown and sum(f" {name} (" in markdown for name in FAMILIES[2:]) == 9
    assert "the noise frontier" in markdown and "95% interval" in markdown
    assert "verdict, margin [95% interval]: noise " in first.stdout
    for plot in ("accuracy", "memorization", "projection", "training_curves", "frontier"):
        assert (out / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    assert "| generated | 20 |" in (out / "report.md").read_text()
    assert len((out / "metrics.jsonl").read_text().splitlines()) > 5
    generated = load_file(str(out / "generated" / "params.safetensors"))["params"]
    assert generated.shape == (20, 128)

    assert pending_jobs(compose_config(["experiment=smoke", f"paths.output_dir={out}"])) == []  # nothing to submit

    zoo_file = out / "zoo" / "zoo.safetensors"
    stamp = zoo_file.stat().st_mtime_ns
    again = ok(run_sweep(["experiment=smoke", f"paths.output_dir={out}"]))
    assert "is complete, skipping" in again.stderr + again.stdout
    assert zoo_file.stat().st_mtime_ns == stamp
    assert json.loads((out / "report.json").read_text())["generated"] == report["generated"]


def test_changed_config_never_overwrites_a_collected_zoo(tmp_path):
    out = tmp_path / "run"
    ok(run_sweep(["experiment=smoke", "stage=collect", f"paths.output_dir={out}"]))
    zoo_bytes = (out / "zoo" / "zoo.safetensors").read_bytes()
    changed = run_sweep(["experiment=smoke", "task.param.k=7", f"paths.output_dir={out}"])
    assert changed.returncode != 0
    assert "task.param.k: 20 -> 7" in changed.stderr
    assert (out / "zoo" / "zoo.safetensors").read_bytes() == zoo_bytes


def test_stages_run_one_at_a_time_from_the_previous_stage_files(tmp_path):
    out = tmp_path / "run"
    early = run_sweep(["experiment=smoke", "stage=train", f"paths.output_dir={out}"])
    assert early.returncode != 0 and "run stage=collect first" in early.stderr
    for stage in ("collect", "train", "generate", "evaluate"):
        result = ok(run_sweep(["experiment=smoke", f"stage={stage}", "sampler=ddim", f"paths.output_dir={out}"]))
        assert f"stage={stage}" in result.stdout or "report.md" in result.stdout
    assert json.loads((out / "report.json").read_text())["generated"]["n"] == 20


def test_config_error_stops_before_any_work(tmp_path):
    out = tmp_path / "run"
    result = run_sweep(["experiment=smoke", "task.param.k=0", f"paths.output_dir={out}"])
    assert result.returncode != 0 and "task.param.k=0 is invalid: must be an integer >= 2" in result.stderr
    assert not (out / "zoo").exists()


def test_own_npz_data_with_the_mlp_and_all_parameters(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 2, 6))
    labels = rng.integers(0, 3, 400)
    x = centres[labels] + 0.8 * rng.normal(size=(400, 2, 6))
    path = tmp_path / "blobs.npz"
    np.savez(path, x_train=x[:300], y_train=labels[:300], x_test=x[300:], y_test=labels[300:])
    out = tmp_path / "run"
    ok(run_sweep(["experiment=smoke", "task=npz_mlp", f"data.path={path}", "task.net.hidden=[16,16]",
                   "task.param.layers=[*]", f"paths.output_dir={out}"]))
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "npz_mlp" and report["param_count"] == 12 * 16 + 2 * 16 + 16 * 16 + 2 * 16 + 16 * 3 + 3
    assert report["original"]["mean"] > 60.0


def test_wandb_offline_run_is_written_under_the_output_dir(tmp_path):
    out = tmp_path / "run"
    ok(run_sweep(["experiment=smoke", "logger=wandb", f"paths.output_dir={out}"]))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = (out / "wandb_run_id.txt").read_text().strip()
    assert (runs[0] / f"run-{run_id}.wandb").stat().st_size > 0


def test_token_design_generates_whole_models_from_the_memory_mapped_zoo(tmp_path):
    out = tmp_path / "run"
    args = ["experiment=digits_full", "generator=token", "ae.normalization=per_coordinate", "task.param.k=20",
            "task.base.epochs=3", "task.collect.steps_per_checkpoint=2", "ae.token_size=128", "ae.optim.steps=300",
            "denoiser.window=8", "diffusion.optim.batch_size=16", "diffusion.optim.steps=100", "sampler=ddim",
            "generate.n=20", f"paths.output_dir={out}"]
    ok(run_sweep(args))
    meta = json.loads((out / "generator" / "generator.json").read_text())
    zoo = json.loads((out / "zoo" / "zoo.json").read_text())
    assert meta["design"] == "token" and meta["tokens"] >= zoo["dim"] / 128
    assert meta["windows"] == -(-meta["tokens"] // 8)
    assert 0 < meta["recon_mse_normalized"] < 1.0
    report = json.loads((out / "report.json").read_text())
    assert report["param_count"] == zoo["dim"] and report["generated"]["n"] == 20
    generated = load_file(out / "generated" / "params.safetensors")["params"]
    assert generated.shape == (20, zoo["dim"]) and generated.isfinite().all()
    assert (generated[1:] != generated[0]).any(1).all()  # 20 different models, not one decoded 20 times
    rerun = ok(run_sweep(args))
    assert "generator in" in rerun.stdout + rerun.stderr and "complete, skipping" in rerun.stdout + rerun.stderr


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")))
def test_every_experiment_runs_at_a_tiny_size(experiment, tmp_path):
    tiny = ["task.param.k=10", "task.base.epochs=1", "task.collect.steps_per_checkpoint=1", "diffusion.optim.steps=5",
            "diffusion.timesteps=20", "generate.n=4", "sampler.steps=5"]
    cfg = compose_config([f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    tiny.append(f"task.collect.runs={min(cfg.task.collect.runs, 2)}")  # whole models from runs: 2 of them
    design = cfg.generator.design
    tiny += [] if design == "flow" else ["ae.optim.steps=5", "sampler=ddim"]
    ok(run_sweep([f"experiment={experiment}", *tiny, f"paths.output_dir={tmp_path / 'run'}"]))
    assert json.loads((tmp_path / "run" / "report.json").read_text())["generated"]["n"] == 4


def test_multirun_writes_one_report_per_seed_a_table_and_one_wandb_group(tmp_path):
    out = tmp_path / "sweep"
    result = ok(run_sweep(["-m", "experiment=smoke", "task.param.k=8", "sampler=ddim", "logger=wandb",
                           "logger.tags=[bench]", f"paths.output_dir={out}", "seed=0,1"]))
    reports = sorted(out.glob("*/report.json"))
    assert f"pdiff: 2 reports under {out}" in result.stdout
    assert all(str(p.parent / "report.md") in result.stdout for p in reports)
    names = ["experiment=smoke,logger.tags=[bench],logger=wandb,sampler=ddim,seed=0,task.param.k=8",
             "experiment=smoke,logger.tags=[bench],logger=wandb,sampler=ddim,seed=1,task.param.k=8"]
    assert [p.parent.name for p in reports] == names
    means = [json.loads(p.read_text())["generated"]["mean"] for p in reports]
    table = json.loads((out / "sweep.json").read_text())
    row = next(r for r in table["rows"] if r[0] == "generated mean")
    assert row[1] == pytest.approx(np.mean(means), abs=1e-3) and row[2] == pytest.approx(np.std(means, ddof=1),
                                                                                         abs=1e-3)
    assert "| generated mean |" in result.stdout and (out / "sweep.md").is_file()
    families = {row[0]: row for row in table["families"]}  # how many seeds beat, tie and lose to each family
    assert set(families) >= set(FAMILIES)
    for row in families.values():
        assert sum(int(count.split("/")[0]) for count in row[1:4]) == 2 and all(c.endswith("/2") for c in row[1:4])
    assert "| selected_10pct |" in result.stdout and "beaten on" in (out / "sweep.md").read_text()
    group = "/".join(out.resolve().parts[-2:])
    for report, name in zip(reports, names):
        run_file = next((report.parent / "wandb").glob("offline-run-*/run-*.wandb"))
        assert wandb_log.run_info(run_file) == {"group": group, "name": name, "tags": ["digits_cnn", "latent", "bench"]}
    summary = next((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert wandb_log.run_info(summary)["group"] == group and wandb_log.run_info(summary)["name"] == "sweep-summary"
    logged = next(row for row in wandb_log.history(summary) if "sweep/table._type" in row)
    assert logged["sweep/table._type"] == "table-file" and logged["sweep/table.nrows"] == len(table["rows"])


USER_NETWORK = '''
import torch
from torch import nn


class MyNet(nn.Module):
    """A user's own network: not an nn.Sequential, a residual forward, BatchNorm named as npz_mlp expects."""

    def __init__(self, input_shape, num_classes, width):
        super().__init__()
        self.fc1 = nn.Linear(input_shape[0], width)
        self.bn1 = nn.BatchNorm1d(width)
        self.fc2 = nn.Linear(width, width)
        self.bn2 = nn.BatchNorm1d(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        h = torch.relu(self.bn1(self.fc1(x)))
        return self.head(h + torch.relu(self.bn2(self.fc2(h))))
'''


def test_a_network_the_tests_never_saw_runs_the_whole_pipeline(tmp_path, monkeypatch):
    (tmp_path / "mymod.py").write_text(USER_NETWORK)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 12))
    labels = rng.integers(0, 3, 300)
    x = centres[labels] + 0.8 * rng.normal(size=(300, 12))
    data = tmp_path / "mine.npz"
    np.savez(data, x_train=x[:240], y_train=labels[:240], x_test=x[240:], y_test=labels[240:])
    out = tmp_path / "run"
    common = ["task=npz_mlp", f"data.path={data}", "experiment=smoke"]
    ok(run_sweep([*common, "task.net={_target_: mymod.MyNet, width: 24}", f"paths.output_dir={out}"]))
    report = json.loads((out / "report.json").read_text())
    assert report["param_count"] == 4 * 24 and report["generated"]["n"] == 20  # bn1 + bn2: weight and bias
    assert json.loads((out / "zoo" / "zoo.json").read_text())["spec"][0]["name"] == "bn1.weight"
    missing = tmp_path / "missing"
    result = run_sweep([*common, "task.net={_target_: mymod.NoSuchNet, width: 24}", f"paths.output_dir={missing}"])
    assert result.returncode != 0 and "task.net._target_='mymod.NoSuchNet'" in result.stderr
    assert not (missing / "zoo").exists()


def test_device_cuda_without_a_gpu_stops_before_any_work_naming_device(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: device=cuda is valid here")
    out = tmp_path / "run"
    result = run_sweep(["experiment=smoke", "device=cuda", f"paths.output_dir={out}"])
    assert result.returncode != 0 and "device=cuda is invalid: this job sees no CUDA GPU" in result.stderr
    assert not (out / "zoo").exists() and not (out / "config.yaml").exists()


def test_task_network_in_bf16_autocast_runs_the_pipeline(tmp_path):
    out = tmp_path / "run"
    ok(run_sweep(["experiment=smoke", "task.precision=bf16", "trainer.precision=bf16", f"paths.output_dir={out}"]))
    report = json.loads((out / "report.json").read_text())
    assert report["original"]["mean"] > 80 and report["generated"]["n"] == 20


def test_compiled_task_network_and_denoiser_run_the_pipeline(tmp_path):
    out = tmp_path / "run"
    ok(run_sweep(["experiment=smoke", "task.compile=true", "denoiser.compile=true", "task.param.k=6",
                  "ae.optim.steps=20", "diffusion.optim.steps=20", "generate.n=6", f"paths.output_dir={out}"]))
    report = json.loads((out / "report.json").read_text())
    assert report["original"]["mean"] > 90 and report["generated"]["n"] == 6
    assert not any(key.startswith("_orig_mod") for key in load_file(out / "zoo" / "base_model.safetensors"))


def test_accuracy_conditioned_flow_with_batchnorm_recalibration_runs_the_pipeline(tmp_path):
    out = tmp_path / "run"
    ok(run_sweep(["experiment=smoke", "generator=flow_conditioned", "task.param.layers=[*]", "task.collect.lr=0.01",
                  "evaluate.recalibrate_batches=2", f"paths.output_dir={out}"]))
    report = json.loads((out / "report.json").read_text())
    zoo = json.loads((out / "zoo" / "zoo.json").read_text())
    generated = json.loads((out / "generated" / "generated.json").read_text())
    assert generated["target_acc"] == pytest.approx(max(zoo["val_accuracy"]), abs=1e-3) and generated["guidance"] == 3.0
    assert generated["sampler"] == "euler" and report["generated"]["n"] == 20
    assert json.loads((out / "generator" / "generator.json").read_text())["accuracy_stats"] is not None
    assert set(report["verdict"]) >= set(FAMILIES)
