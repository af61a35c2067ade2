"""benchmarks/scale.py at a tiny size: the rows later checks read, and the out-of-memory guard."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, ok

pytestmark = pytest.mark.slow


def run_scale(tmp_path, *args: str) -> list[dict]:
    out = tmp_path / "scale.json"
    ok(subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--out", str(out), *args],
                      capture_output=True, text=True, timeout=600, cwd=REPO))
    return json.loads(out.read_text())


def test_scale_rows_for_both_designs(tmp_path):
    rows = run_scale(tmp_path, "--dims", "3000", "--steps", "2")
    assert [(row["design"], row["D"], row["status"]) for row in rows] == [("token", 3000, "ok"),
                                                                          ("pdiff_v1", 3000, "ok")]
    for row in rows:
        assert row["s_per_step"] > 0 and 0 < row["peak_rss_gb"] < 20 and row["bytes_per_param"] > 0
    token = rows[0]
    assert token["tokens"] == 3000 // 64 + 1 and token["diffusion_s_per_step"] > 0


def test_a_run_over_the_memory_limit_is_recorded_as_oom(tmp_path):
    rows = run_scale(tmp_path, "--dims", "3000", "--steps", "2", "--designs", "pdiff_v1", "--rss-limit-gb", "0.05")
    assert rows == [{"design": "pdiff_v1", "D": 3000, "s_per_step": None, "peak_rss_gb": rows[0]["peak_rss_gb"],
                     "status": "oom"}]
    assert rows[0]["peak_rss_gb"] > 0.05


def test_gpu_benchmark_runs_on_the_cpu_and_projects_the_reference_job(tmp_path):
    out = tmp_path / "gpu.json"
    ok(subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--out", str(out), "--device", "cpu",
                       "--models", "3", "--images", "64"], capture_output=True, text=True, timeout=900, cwd=REPO))
    result = json.loads(out.read_text())
    assert result["evaluation"]["differing_predictions"] == 0 and result["evaluation"]["speedup"] > 1
    assert result["base_bf16"]["flop_per_image"] > 1e9  # ResNet-18 on 32x32: ~3.3 GFLOP per training image
    assert result["projected_reference_job"]["total_h"] > 0
