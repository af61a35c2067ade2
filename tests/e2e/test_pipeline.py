"""The real pipeline at a tiny size: run as a user runs it (launch/sweep.py in a subprocess) where
the launcher is part of the claim, else in this process (run_pipeline, as launch/sweep.py calls it:
no interpreter start-up).

One experiment=smoke run (tests.conftest.smoke_run) serves every test that only reads a finished
run, and a test that changes one works on a copy of it; the others make the smallest run their claim
needs.
"""

import json
import logging
import math
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig
from safetensors.torch import load_file

from pdiff.cluster.jobs import pending_jobs
from pdiff.config import FrontierSearch
from pdiff.errors import ConfigError, ZooError
from pdiff.generators import design_class
from pdiff.pipeline.run import run_pipeline
from pdiff.zoo.store import ParamZoo
from tests.helpers import wandb_log
from tests.helpers.configs import CONFIGS, QUICK_EVALUATION, TINY, compose_config
from tests.helpers.plots import assert_plot_drawn, assert_training_logged_and_plotted, logged_losses
from tests.helpers.runs import copy_run, ok, run_sweep

pytestmark = pytest.mark.slow
REPORT_KEYS = {
    "split",
    "task",
    "k",
    "param_count",
    "original",
    "generated",
    "timings_s",
    "memorization",
    "verdict",
    "validation",
    "n_test",
    "keep_best",
    "cost",
    "zoo_check",
    "ignored_overrides",
}
MEMORIZATION_KEYS = {"nn_l2_mean", "max_iou_mean", "acc_mean", "novel_fraction"}
POPULATIONS = {
    "originals",
    "generated",
    "gaussian",
    "average16",
    "average",
    "interpolation",
    "selected_top1",
    "selected_5pct",
    "selected_10pct",
    "selected_25pct",
    "selected_average16",
}
FAMILIES = (
    "noise",
    "selected_noise",
    "gaussian",
    "average16",
    "average",
    "interpolation",
    "selected_top1",
    "selected_5pct",
    "selected_10pct",
    "selected_25pct",
    "selected_average16",
)
STAT_KEYS = {"n", "best", "mean", "median", "min", "std"}
PLOTS = ("accuracy", "memorization", "projection", "frontier")


def expected_populations(cfg: DictConfig) -> set[str]:
    """The populations every report measures, named from the evaluate.baselines config (every
    noise scale with evaluate.baselines.frontier=grid; the bisection predicts some of them)."""
    baselines = cfg.evaluate.baselines
    grid = FrontierSearch(baselines.frontier) is FrontierSearch.grid
    return {
        "originals",
        "generated",
        "gaussian",
        "average",
        "interpolation",
        "selected_top1",
        f"average{baselines.average_of}",
        f"selected_average{baselines.average_of}",
        *(f"selected_{fraction * 100:g}pct" for fraction in baselines.selected_fractions),
        *(f"noise_{scale:g}" for scale in baselines.noise_scales if grid),
    }


def assert_frontiers(memo: dict, models_per_scale: int) -> None:
    """Both noise frontiers were predicted at 2 scales or more, each with models_per_scale models,
    and the less noise, the more similar the models are to the originals."""
    for prefix in ("noise_", "selected_noise_"):
        scales = sorted(
            (float(name.rsplit("_", 1)[1]), row)
            for name, row in memo.items()
            if name.startswith(prefix) and isinstance(row, dict)
        )
        assert len(scales) >= 2 and all(row["n"] == models_per_scale for _, row in scales), prefix
        assert scales[0][1]["max_iou_mean"] >= scales[-1][1]["max_iou_mean"], prefix


def _percent(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 100.0  # False for NaN and inf


def check_finished_run(out: Path, cfg: DictConfig) -> dict:
    """What a finished run of any experiment and design holds, checked against the config that made
    it; returns the report. The zoo: K vectors as wide as its spec, naming tensors of the network it
    was collected from; the report: every population, accuracies in [0, 100]; the generated models:
    generate.n distinct finite vectors of the zoo's width; metrics.jsonl and the plots: every
    training phase the design declares, drawn."""
    zoo = ParamZoo.load(out / "zoo")
    k, n, entries = cfg.task.param.k, cfg.generate.n, zoo.spec.entries
    assert (
        zoo.k == k
        and tuple(zoo.vectors.shape) == (k, zoo.spec.dim)
        and bool(zoo.vectors.isfinite().all())
    )
    assert [entry.offset for entry in entries] == [
        sum(e.numel for e in entries[:i]) for i in range(len(entries))
    ]
    assert sum(entry.numel for entry in entries) == zoo.spec.dim
    network = load_file(out / "zoo" / "base_model.safetensors")
    assert all(tuple(network[entry.name].shape) == tuple(entry.shape) for entry in entries)
    assert all(
        any(
            fnmatch(entry.name, pattern) or entry.name.startswith(f"{pattern}.")
            for pattern in cfg.task.param.layers
        )
        for entry in entries
    )
    assert zoo.meta["runs"] == cfg.task.collect.runs and sum(zoo.meta["run_sizes"]) == k
    assert len({tuple(vector.tolist()) for vector in zoo.vectors}) == k  # K checkpoints, none twice
    report = json.loads((out / "report.json").read_text())
    assert set(report) == REPORT_KEYS
    assert (report["k"], report["param_count"]) == (k, zoo.spec.dim)
    assert (report["original"]["n"], report["generated"]["n"]) == (k, n)
    for stats in (report["original"], report["generated"]):
        assert set(stats) == STAT_KEYS and all(
            _percent(stats[key]) for key in ("best", "mean", "median", "min")
        )
        assert (
            stats["min"] <= stats["median"] <= stats["best"]
            and stats["min"] <= stats["mean"] <= stats["best"]
        )
        assert math.isfinite(stats["std"]) and stats["std"] >= 0
    memo = report["memorization"]
    assert set(memo) >= expected_populations(cfg)
    assert_frontiers(memo, cfg.evaluate.baselines.models_per_scale)
    for name, row in (
        (name, row) for name, row in memo.items() if isinstance(row, dict)
    ):  # a row per population
        assert set(row) >= MEMORIZATION_KEYS and _percent(row["acc_mean"]), name
        assert 0.0 <= row["novel_fraction"] <= 1.0 and row["nn_l2_mean"] >= 0, name
    generated = load_file(out / "generated" / "params.safetensors")["params"]
    assert tuple(generated.shape) == (n, zoo.spec.dim) and bool(generated.isfinite().all())
    assert bool((generated[1:] != generated[0]).any(1).all())  # n different models, not one n times
    assert_training_logged_and_plotted(out, design_class(cfg).phases)
    for plot in PLOTS:
        assert_plot_drawn(out / f"{plot}.png")
    return report


def test_smoke_pipeline_end_to_end_then_skips_done_work(smoke_run, tmp_path):
    out = smoke_run.out
    cfg = compose_config([*smoke_run.args, f"paths.output_dir={out}"])
    assert "pdiff: digits_cnn K=20 D=128" in smoke_run.output
    report = check_finished_run(out, cfg)
    assert report["k"] == 20 and report["param_count"] == 128
    assert report["generated"]["mean"] > 90.0  # generated BatchNorm layers give working networks
    assert {"collect", "train_autoencoder", "train_diffusion", "generate", "evaluate"} <= set(
        report["timings_s"]
    )
    timings = report["timings_s"]
    cost = report[
        "cost"
    ]  # one shared base model and one collection run: the run's SGD time over its 20 checkpoints
    assert cost["sgd_per_checkpoint_s"] == pytest.approx(
        (timings["collect_base"] + timings["collect_run_0"]) / 20, abs=1e-3
    )
    picked = report["keep_best"]  # one run: the trained pool is its 20 checkpoints
    zoo_val = json.loads((out / "zoo" / "zoo.json").read_text())["val_accuracy"]
    assert picked["n"] == 20 and picked["trained"]["kept_val"] == pytest.approx(
        max(zoo_val), abs=1e-3
    )
    markdown = (out / "report.md").read_text()
    assert "## Picking a model as a user would" in markdown
    memo = report["memorization"]
    assert set(memo) >= POPULATIONS
    assert all(set(memo[name]) >= MEMORIZATION_KEYS for name in POPULATIONS)
    verdict = report["verdict"]
    assert tuple(verdict["families"]) == FAMILIES
    for family in FAMILIES:
        entry = verdict[family]
        assert entry["status"] in ("beats", "ties", "loses") and entry["low"] <= entry["high"]
        assert isinstance(entry["acc_margin"], float) and entry["beats"] == (
            entry["status"] == "beats"
        )
    assert verdict["novel_fraction"] == memo["generated"]["novel_fraction"]
    assert verdict["beats_all"] == all(verdict[f]["status"] == "beats" for f in FAMILIES)
    assert report["n_test"] == 539 and report["validation"]["original"]["n"] == 20
    assert all(len(memo[name]["acc_interval"]) == 2 for name in POPULATIONS)
    assert (
        "generated models" in markdown
        and sum(f" {name} (" in markdown for name in FAMILIES[2:]) == 9
    )
    assert "the noise frontier" in markdown and "95% interval" in markdown
    assert "verdict, margin [95% interval]: noise " in smoke_run.output
    assert "| generated | 20 |" in markdown

    assert pending_jobs(cfg) == []  # nothing to submit
    again_dir = copy_run(
        smoke_run, tmp_path / "run"
    )  # the rerun must change nothing: on a copy, file times kept
    zoo_file = again_dir / "zoo" / "zoo.safetensors"
    stamp = zoo_file.stat().st_mtime_ns
    again = ok(run_sweep([*smoke_run.args, f"paths.output_dir={again_dir}"]))
    assert "is complete, skipping" in again.stderr + again.stdout
    assert zoo_file.stat().st_mtime_ns == stamp
    assert json.loads((again_dir / "report.json").read_text())["generated"] == report["generated"]


def test_wandb_offline_run_is_written_under_the_output_dir(smoke_run):
    runs = list((smoke_run.out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = (smoke_run.out / "wandb_run_id.txt").read_text().strip()
    run_file = runs[0] / f"run-{run_id}.wandb"
    logged = {
        (row["ae/step"], row["ae/loss"]) for row in wandb_log.history(run_file) if "ae/loss" in row
    }
    assert logged and logged == {(step, loss) for step, loss in logged_losses(smoke_run.out, "ae")}


def test_changed_config_never_overwrites_a_collected_zoo(smoke_run, tmp_path):
    out = copy_run(smoke_run, tmp_path / "run", ("zoo", "timings.json"))
    zoo_bytes = (out / "zoo" / "zoo.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=r"task.param.k: 20 -> 30"):
        run_pipeline(
            compose_config(
                [
                    "experiment=smoke",
                    "task=digits_cnn",
                    "task.param.k=30",
                    f"paths.output_dir={out}",
                ]
            )
        )
    assert (out / "zoo" / "zoo.safetensors").read_bytes() == zoo_bytes


def test_stages_run_one_at_a_time_from_the_previous_stage_files(smoke_run, tmp_path, capsys):
    with pytest.raises(ZooError, match="run stage=collect first"):
        run_pipeline(
            compose_config(
                [
                    "experiment=smoke",
                    "task=digits_cnn",
                    "stage=train",
                    f"paths.output_dir={tmp_path / 'empty'}",
                ]
            )
        )
    out = copy_run(
        smoke_run, tmp_path / "run", ("zoo", "timings.json")
    )  # what stage=collect leaves
    for stage in ("train", "generate", "evaluate"):
        run_pipeline(
            compose_config(
                [
                    "experiment=smoke",
                    "task=digits_cnn",
                    "threads=1",
                    f"stage={stage}",
                    "sampler=ddim",
                    f"paths.output_dir={out}",
                ]
            )
        )
        printed = capsys.readouterr().out
        assert f"stage={stage}" in printed or "report.md" in printed
    weights = sorted(path.name for path in (smoke_run.out / "generator").glob("*.safetensors"))
    assert weights and weights == sorted(
        path.name for path in (out / "generator").glob("*.safetensors")
    )
    for (
        name
    ) in weights:  # stage=train alone trains what the whole pipeline trained from the same zoo
        assert (out / "generator" / name).read_bytes() == (
            smoke_run.out / "generator" / name
        ).read_bytes(), name
    assert json.loads((out / "generated" / "generated.json").read_text())["sampler"] == "ddim"
    check_finished_run(
        out,
        compose_config(
            ["experiment=smoke", "task=digits_cnn", "sampler=ddim", f"paths.output_dir={out}"]
        ),
    )


def test_config_error_stops_before_any_work(tmp_path):
    out = tmp_path / "run"
    result = run_sweep(
        ["experiment=smoke", "task=digits_cnn", "task.param.k=0", f"paths.output_dir={out}"]
    )
    assert (
        result.returncode != 0
        and "task.param.k=0 is invalid: must be an integer >= 2" in result.stderr
    )
    assert not (out / "zoo").exists()


def _blobs(path: Path, shape: tuple[int, ...], n: int, split: int) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, *shape))
    labels = rng.integers(0, 3, n)
    x = centres[labels] + 0.8 * rng.normal(size=(n, *shape))
    np.savez(
        path, x_train=x[:split], y_train=labels[:split], x_test=x[split:], y_test=labels[split:]
    )


def test_own_npz_data_with_the_mlp_and_all_parameters(tmp_path):
    path = tmp_path / "blobs.npz"
    _blobs(path, (2, 6), 400, 300)
    out = tmp_path / "run"
    run_pipeline(
        compose_config(
            [
                "experiment=smoke",
                "task=npz_mlp",
                f"data.path={path}",
                "task.net.hidden=[16,16]",
                "task.param.layers=[*]",
                *QUICK_EVALUATION,
                f"paths.output_dir={out}",
            ]
        )
    )
    report = json.loads((out / "report.json").read_text())
    assert (
        report["task"] == "npz_mlp"
        and report["param_count"] == 12 * 16 + 2 * 16 + 16 * 16 + 2 * 16 + 16 * 3 + 3
    )
    assert report["original"]["mean"] > 60.0


def test_token_design_generates_whole_models_from_the_memory_mapped_zoo(tmp_path, caplog):
    out = tmp_path / "run"
    args = [
        "experiment=digits_full",
        "generator=token",
        "ae.normalization=per_coordinate",
        "task.param.k=20",
        "task.base.epochs=3",
        "task.collect.steps_per_checkpoint=2",
        "ae.token_size=128",
        "ae.optim.steps=300",
        "denoiser.window=8",
        "diffusion.optim.batch_size=16",
        "diffusion.optim.steps=100",
        "sampler=ddim",
        "denoiser.code.optim.steps=40",
        "denoiser.code.optim.warmup_steps=5",
        "generate.n=20",
        *QUICK_EVALUATION,
        f"paths.output_dir={out}",
    ]
    run_pipeline(compose_config(args))
    meta = json.loads((out / "generator" / "generator.json").read_text())
    zoo = json.loads((out / "zoo" / "zoo.json").read_text())
    assert meta["design"] == "token" and meta["tokens"] >= zoo["dim"] / 128
    assert meta["windows"] == -(-meta["tokens"] // 8)
    assert 0 < meta["recon_mse_normalized"] < 1.0
    report = json.loads((out / "report.json").read_text())
    assert report["param_count"] == zoo["dim"] and report["generated"]["n"] == 20
    generated = load_file(out / "generated" / "params.safetensors")["params"]
    assert generated.shape == (20, zoo["dim"]) and generated.isfinite().all()
    assert (
        (generated[1:] != generated[0]).any(1).all()
    )  # 20 different models, not one decoded 20 times
    with caplog.at_level(logging.INFO, logger="pdiff"):
        run_pipeline(compose_config(args))
    assert f"train: generator in {out / 'generator'} is complete, skipping" in caplog.text


# heldout_subsets and heldout_variants (zoos of many tasks: K is tasks x seeds x checkpoints) run
# tiny in tests/e2e/test_unseen_tasks.py
EXPERIMENTS = sorted(
    p.stem
    for p in (CONFIGS / "experiment").glob("*.yaml")
    if p.stem not in ("smoke", "heldout_subsets", "heldout_variants")
)


@pytest.mark.parametrize(
    "experiment", EXPERIMENTS
)  # smoke: the shared run, checked the same way above
def test_every_experiment_runs_at_a_tiny_size(experiment, tmp_path):
    """Each experiment file composed with size=smoke (every design's own training shrinks), K=10
    from at most 2 runs, 4 generated models; run in this process (the launcher is the smoke run's
    subject)."""
    args = [
        f"experiment=[{experiment},smoke]",
        "task.param.k=10",
        "task.base.epochs=1",
        "task.collect.steps_per_checkpoint=1",
        "generate.n=4",
        "evaluate.baselines.average_of=4",
        "data.mnist1d.val_samples=500",
        "data.mnist1d.test_samples=1000",
        *QUICK_EVALUATION,
        f"paths.output_dir={tmp_path / 'run'}",
    ]
    runs = compose_config(args).task.collect.runs
    cfg = compose_config(
        [*args, f"task.collect.runs={min(runs, 2)}"]
    )  # whole models from runs: 2 of them
    run_pipeline(cfg)
    check_finished_run(tmp_path / "run", cfg)


def test_multirun_writes_one_report_per_seed_a_table_and_one_wandb_group(tmp_path):
    out = tmp_path / "sweep"
    result = ok(
        run_sweep(
            [
                "-m",
                "experiment=smoke",
                "task=digits_cnn",
                "sampler=ddim",
                "logger=wandb",
                "logger.tags=[bench]",
                f"paths.output_dir={out}",
                "seed=0,1",
            ]
        )
    )
    reports = sorted(out.glob("*/report.json"))
    assert f"pdiff: 2 reports under {out}" in result.stdout
    assert all(str(p.parent / "report.md") in result.stdout for p in reports)
    names = [
        "experiment=smoke,logger.tags=[bench],logger=wandb,sampler=ddim,seed=0,task=digits_cnn",
        "experiment=smoke,logger.tags=[bench],logger=wandb,sampler=ddim,seed=1,task=digits_cnn",
    ]
    assert [p.parent.name for p in reports] == names
    means = [json.loads(p.read_text())["generated"]["mean"] for p in reports]
    table = json.loads((out / "sweep.json").read_text())
    row = next(r for r in table["rows"] if r[0] == "generated mean")
    assert row[1] == pytest.approx(np.mean(means), abs=1e-3) and row[2] == pytest.approx(
        np.std(means, ddof=1), abs=1e-3
    )
    assert "| generated mean |" in result.stdout and (out / "sweep.md").is_file()
    families = {
        row[0]: row for row in table["families"]
    }  # how many seeds beat, tie and lose to each family
    assert set(families) >= set(FAMILIES)
    for row in families.values():
        assert sum(int(count.split("/")[0]) for count in row[1:4]) == 2 and all(
            c.endswith("/2") for c in row[1:4]
        )
    assert "| selected_10pct |" in result.stdout and "beaten on" in (out / "sweep.md").read_text()
    group = "/".join(out.resolve().parts[-2:])
    for report, name in zip(reports, names):
        run_file = next((report.parent / "wandb").glob("offline-run-*/run-*.wandb"))
        assert wandb_log.run_info(run_file) == {
            "group": group,
            "name": name,
            "tags": ["digits_cnn", "latent", "bench"],
        }
    summary = next((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (
        wandb_log.run_info(summary)["group"] == group
        and wandb_log.run_info(summary)["name"] == "sweep-summary"
    )
    logged = next(row for row in wandb_log.history(summary) if "sweep/table._type" in row)
    assert logged["sweep/table._type"] == "table-file" and logged["sweep/table.nrows"] == len(
        table["rows"]
    )


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
    monkeypatch.syspath_prepend(str(tmp_path))
    data = tmp_path / "mine.npz"
    _blobs(data, (12,), 300, 240)
    out = tmp_path / "run"
    common = ["task=npz_mlp", f"data.path={data}", "experiment=smoke", *QUICK_EVALUATION]
    run_pipeline(
        compose_config(
            [*common, "task.net={_target_: mymod.MyNet, width: 24}", f"paths.output_dir={out}"]
        )
    )
    report = json.loads((out / "report.json").read_text())
    assert (
        report["param_count"] == 4 * 24 and report["generated"]["n"] == 20
    )  # bn1 + bn2: weight and bias
    assert json.loads((out / "zoo" / "zoo.json").read_text())["spec"][0]["name"] == "bn1.weight"
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError, match=r"task.net._target_='mymod.NoSuchNet'"):
        run_pipeline(
            compose_config(
                [
                    *common,
                    "task.net={_target_: mymod.NoSuchNet, width: 24}",
                    f"paths.output_dir={missing}",
                ]
            )
        )
    assert not (missing / "zoo").exists()


def test_device_cuda_without_a_gpu_stops_before_any_work_naming_device(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: device=cuda is valid here")
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="device=cuda is invalid: this job sees no CUDA GPU"):
        run_pipeline(
            compose_config(
                ["experiment=smoke", "task=digits_cnn", "device=cuda", f"paths.output_dir={out}"]
            )
        )
    assert not (out / "zoo").exists() and not (out / "config.yaml").exists()


def test_task_network_in_bf16_autocast_runs_the_pipeline(tmp_path):
    out = tmp_path / "run"
    run_pipeline(
        compose_config(
            [
                "experiment=smoke",
                "task=digits_cnn",
                "task.precision=bf16",
                "trainer.precision=bf16",
                *TINY,
                f"paths.output_dir={out}",
            ]
        )
    )
    report = json.loads((out / "report.json").read_text())
    assert report["original"]["mean"] > 80 and report["generated"]["n"] == 8


def test_compiled_task_network_and_denoiser_run_the_pipeline_and_name_an_override_it_never_reads(
    tmp_path,
):
    out = tmp_path / "run"  # a process of its own: torch.compile's caches and workers stay in it
    result = ok(
        run_sweep(
            [
                "experiment=smoke",
                "task=digits_cnn",
                "task.compile=true",
                "denoiser.compile=true",
                "data.mnist1d.seed=7",
                *TINY,
                f"paths.output_dir={out}",
            ]
        )
    )
    report = json.loads((out / "report.json").read_text())
    assert report["original"]["mean"] > 90 and report["generated"]["n"] == 8
    ignored = (
        "data.mnist1d.seed=7 (data.mnist1d is read only when data.name is mnist1d; this run has "
        "data.name=digits)"
    )
    assert report["ignored_overrides"] == [ignored]
    assert (
        f"ignored: {ignored}" in result.stdout.splitlines()[0]
    )  # warned at the start, before any work
    assert (
        f"Overrides this run never read (ignored): `{ignored}`." in (out / "report.md").read_text()
    )
    assert not any(
        key.startswith("_orig_mod") for key in load_file(out / "zoo" / "base_model.safetensors")
    )


def test_accuracy_conditioned_flow_with_batchnorm_recalibration_runs_the_pipeline(tmp_path):
    out = tmp_path / "run"
    args = [
        "experiment=smoke",
        "task=digits_cnn",
        "generator=flow_conditioned",
        "task.param.layers=[*]",
        "task.collect.lr=0.01",
        "evaluate.recalibrate_batches=2",
        *QUICK_EVALUATION,
        f"paths.output_dir={out}",
    ]
    cfg = compose_config(args)
    run_pipeline(cfg)
    report = check_finished_run(out, cfg)  # the flow design's own phase, logged and drawn
    zoo = json.loads((out / "zoo" / "zoo.json").read_text())
    generated = json.loads((out / "generated" / "generated.json").read_text())
    assert generated["target_acc"] == pytest.approx(max(zoo["val_accuracy"]), abs=1e-3)
    assert generated["guidance"] == cfg.generate.guidance and generated["sampler"] == "euler"
    assert (
        json.loads((out / "generator" / "generator.json").read_text())["accuracy_stats"] is not None
    )
    assert set(report["verdict"]) >= set(FAMILIES)
