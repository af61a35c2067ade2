"""benchmarks/scale.py at a tiny size: the rows later checks read, and the out-of-memory guard."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.helpers.configs import QUICK_EVALUATION, REPO
from tests.helpers.runs import ok

pytestmark = pytest.mark.slow


def run_scale(tmp_path, *args: str) -> list[dict]:
    out = tmp_path / "scale.json"
    ok(
        subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--out", str(out), *args],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
    )
    return json.loads(out.read_text())


def test_scale_rows_for_both_designs(tmp_path):
    rows = run_scale(tmp_path, "--dims", "3000", "--steps", "2")
    assert [(row["design"], row["D"], row["status"]) for row in rows] == [
        ("token", 3000, "ok"),
        ("pdiff_v1", 3000, "ok"),
    ]
    for row in rows:
        assert row["s_per_step"] > 0 and 0 < row["peak_rss_gb"] < 20 and row["bytes_per_param"] > 0
    token = rows[0]
    assert token["tokens"] == 3000 // 64 + 1 and token["diffusion_s_per_step"] > 0


def test_a_run_over_the_memory_limit_is_recorded_as_oom(tmp_path):
    rows = run_scale(
        tmp_path,
        "--dims",
        "3000",
        "--steps",
        "2",
        "--designs",
        "pdiff_v1",
        "--rss-limit-gb",
        "0.05",
    )
    assert rows == [
        {
            "design": "pdiff_v1",
            "D": 3000,
            "s_per_step": None,
            "peak_rss_gb": rows[0]["peak_rss_gb"],
            "status": "oom",
        }
    ]
    assert rows[0]["peak_rss_gb"] > 0.05


def test_gpu_benchmark_runs_on_the_cpu_and_projects_the_reference_job(tmp_path, monkeypatch):
    """benchmarks/gpu.py's main on the CPU, in this process, with its ResNet-18 steps at batch 4
    (one timed step) and sampling 8 models: at its own CPU sizes (batch 32, 200 models) it takes
    minutes, bf16 convolutions on a CPU running at ~2 images/s. Every measurement, the projection
    and the JSON are the script's own."""
    monkeypatch.syspath_prepend(
        str(REPO / "benchmarks")
    )  # as `python benchmarks/gpu.py` has it (table_output)
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    base_training, collection_checkpoint, sampling = (
        gpu.base_training,
        gpu.collection_checkpoint,
        gpu.sampling,
    )
    monkeypatch.setattr(
        gpu,
        "base_training",
        lambda device, precision, batch, steps, peak: base_training(device, precision, 4, 1, peak),
    )
    monkeypatch.setattr(
        gpu,
        "collection_checkpoint",
        lambda device, batch, steps: collection_checkpoint(device, 4, 1),
    )
    monkeypatch.setattr(gpu, "sampling", lambda device, cfg, models: sampling(device, cfg, 8))
    out = tmp_path / "gpu.json"
    monkeypatch.setattr(
        sys,
        "argv",
        ["gpu.py", "--out", str(out), "--device", "cpu", "--models", "3", "--images", "64"],
    )
    gpu.main()
    result = json.loads(out.read_text())
    assert (
        result["evaluation"]["differing_predictions"] == 0 and result["evaluation"]["speedup"] > 1
    )
    assert (
        result["base_bf16"]["flop_per_image"] > 1e9
    )  # ResNet-18 on 32x32: ~3.3 GFLOP per training image
    assert result["projected_reference_job"]["total_h"] > 0


def test_gpu_rung_benchmark_trains_and_samples_both_designs_on_the_cpu(tmp_path):
    """benchmarks/gpu_rung.py (the GPU check's 10^6 rung) on the CPU, its MLP shrunk to 16 x 16
    (D = 1,098) and K = 8, bf16 autocast in training as on a GPU: every phase of both designs is
    timed and projected to its default budget, and the sampled models are finite."""
    out = tmp_path / "rung.json"
    shrink = [
        "task.net.hidden=[16,16]",
        "task.param.k=8",
        "generate.n=4",
        "sampler.steps=2",
        "diffusion.timesteps=20",
        "threads=1",
    ]
    ok(
        subprocess.run(
            [
                sys.executable,
                str(REPO / "benchmarks" / "gpu_rung.py"),
                *("--out", str(out), "--device", "cpu", "--precision", "bf16", "--steps", "3"),
                *("--set", *shrink),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
    )
    result = json.loads(out.read_text())
    assert (result["D"], result["K"], result["precision"]) == (1098, 8, "bf16")
    flow_pca, token = result["designs"]["flow_pca"], result["designs"]["token"]
    assert list(flow_pca["phases"]) == ["train_flow"]
    assert list(token["phases"]) == [
        "fit_code",
        "train_autoencoder",
        "train_code",
        "train_diffusion",
    ]
    for design in (flow_pca, token):
        assert design["train_rows"] == 2  # generator.train_fraction=0.25 of K = 8
        for phase in design["phases"].values():
            assert phase["projected_s"] >= phase["measured_s"] > 0
            if "s_per_step" in phase:
                assert phase["s_per_step"] > 0 and phase["steps"] == 3
        generate = design["generate"]
        assert (generate["models"], generate["target_models"], generate["non_finite_models"]) == (
            2,
            4,
            0,
        )
        assert design["projected_s"] > design["train_s"] > 0
    assert token["phases"]["train_code"]["default_steps"] == 5000


def test_scale_quality_ladder_rung_with_the_joint_token_design_and_an_out_of_time_row(tmp_path):
    """benchmarks/scale_quality.py on the ladder's smallest rung (experiment=mnist1d_full's network,
    7,434 parameters) shrunk to 3 runs of 2 checkpoints: the joint token design's row carries what
    the JSON promises; a design stopped by --budget-s is a row that says so, on the zoo collected by
    the first call."""
    tiny = [
        "task.collect.runs=3",
        "task.param.k=6",
        "task.base.epochs=2",
        "generate.n=6",
        "threads=1",
        "ae.optim.steps=20",
        "ae.optim.warmup_steps=2",
        "diffusion.optim.steps=20",
        "diffusion.optim.warmup_steps=2",
        "sampler.steps=4",
        "evaluate.baselines.average_of=4",
        *QUICK_EVALUATION,
    ]
    work, out = tmp_path / "work", tmp_path / "ladder.json"

    def ladder(*args: str) -> list[dict]:
        ok(
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "benchmarks" / "scale_quality.py"),
                    "--out",
                    str(out),
                    "--work-dir",
                    str(work),
                    *args,
                ],
                capture_output=True,
                text=True,
                timeout=600,
                cwd=REPO,
            )
        )
        return json.loads(out.read_text())["rows"]

    [row] = ladder(
        "--designs",
        "token",
        "--set",
        *tiny,
        "denoiser.code.optim.steps=20",
        "denoiser.code.optim.warmup_steps=2",
    )
    assert (row["rung"], row["design"], row["seed"], row["status"], row["D"], row["K"]) == (
        "1e4",
        "token",
        0,
        "ok",
        7434,
        6,
    )
    # the best quarter of 6 checkpoints (generator.train_fraction=0.25) is 2 rows: a 1-component
    # code
    assert row["grows_with_D"]["code_components"] == 1 and row["grows_with_D"]["tokens"] > 0
    assert set(row["verdict"]) >= {"noise", "gaussian", "selected_top1"}
    for family in row["verdict"].values():
        assert (
            family["status"] in {"beats", "ties", "loses"}
            and family["low"] <= family["acc_margin"] <= family["high"]
        )
    low, high = row["generated_interval"]
    assert (
        low <= row["generated_mean"] <= high and row["original_interval"][0] <= row["original_mean"]
    )
    assert {"train_autoencoder", "train_code", "train_diffusion", "generate", "evaluate"} <= set(
        row["stage_s"]
    )
    assert (
        row["peak_rss_gb"] > 0 and row["n_generated"] == 6 and "margin_interval" in row["keep_best"]
    )
    [stopped] = ladder("--designs", "latent", "--budget-s", "2", "--set", *tiny)
    assert stopped["status"] == "out of time: stopped after 2 s" and "D" not in stopped
