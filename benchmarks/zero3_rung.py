"""A ladder rung's generator trained twice from one collected zoo: one plain process, and a 2-rank
ZeRO-3 SLURM job (slurm/jobs/train_deepspeed.sh on the local cluster); their losses and weights compared.

    python benchmarks/zero3_rung.py --zoo-run DIR --out FILE.json [--rung 1e6] [--seed 0]
    [--work-dir DIR]
        [--set OVERRIDE ...]

--zoo-run is a folder that holds the rung's collected zoo/ (stage=collect). The two runs get linked
copies of it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file
from scale_quality import DESIGNS, REPO, RUNGS, linked_copy, run
from table_output import emit

NETWORKS = (
    "autoencoder.safetensors",
    "code_denoiser.safetensors",
    "code_denoiser_ema.safetensors",
    "denoiser.safetensors",
    "denoiser_ema.safetensors",
    "code.safetensors",
)


def losses(folder: Path) -> dict[str, float]:
    out = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for phase in ("ae", "code", "diffusion"):
            if f"{phase}/loss" in row:
                out[f"{phase}/{row[f'{phase}/step']}"] = row[f"{phase}/loss"]
    return out


def slurm_job(overrides: list[str], folder: Path) -> dict:
    """sbatch --wait slurm/jobs/train_deepspeed.sh (2 tasks, ZeRO-3): its exit, wall seconds and output
    tail."""
    started = time.perf_counter()
    env = dict(os.environ, PDIFF_OUTPUT_DIR=str(folder), PDIFF_QUIET="1", WANDB_MODE="offline")
    done = subprocess.run(
        [
            "sbatch",
            "--wait",
            "--ntasks=2",
            "--mem=12G",
            f"--output={folder}.slurm.out",
            "slurm/jobs/train_deepspeed.sh",
            "trainer.zero_stage=3",
            *overrides,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    status = (
        "ok"
        if done.returncode == 0
        else f"failed ({done.returncode}): {done.stderr.strip()[-300:]}"
    )
    return {"status": status, "process_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zoo-run", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--rung", default="1e6", choices=list(RUNGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument(
        "--set", nargs="*", default=[], dest="extra", help="overrides added to both runs"
    )
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="pdiff-zero3-"))
    overrides = [
        f"experiment={RUNGS[args.rung]}",
        f"seed={args.seed}",
        *DESIGNS["token"],
        *args.extra,
    ]
    plain, zero3 = work / "plain", work / "zero3"
    for folder in (plain, zero3):
        linked_copy(args.zoo_run, folder)
    one = run(["stage=train", "threads=1", *overrides], plain, budget_s=7200)
    two = slurm_job(overrides, zero3)
    if one["status"] != "ok" or two["status"] != "ok":
        sys.exit(f"plain: {one['status']}; ZeRO-3 job: {two['status']}")
    single, ranks = losses(plain), losses(zero3)
    relative = {
        key: abs(ranks[key] - value) / max(abs(value), 1e-12) for key, value in single.items()
    }
    weights = {}
    for name in NETWORKS:
        left, right = load_file(plain / "generator" / name), load_file(zero3 / "generator" / name)
        weights[name] = max(float((left[key] - right[key]).abs().max()) for key in left)
    meta = json.loads((zero3 / "generator" / "generator.json").read_text())
    result = {
        "rung": args.rung,
        "overrides": overrides,
        "plain": one,
        "zero3_slurm": two,
        "ranks": meta["ranks"],
        "same_loss_steps": single.keys() == ranks.keys(),
        "max_relative_loss_difference": {
            phase: max(v for k, v in relative.items() if k.startswith(phase))
            for phase in ("ae", "code", "diffusion")
        },
        "max_weight_difference": weights,
    }
    rows = [
        [phase, f"{value:.2e}"] for phase, value in result["max_relative_loss_difference"].items()
    ]
    rows += [[name, f"{value:.2e}"] for name, value in weights.items()]
    rows += [["plain s / ZeRO-3 job s", f"{one['process_s']} / {two['process_s']}"]]
    emit(
        f"rung {args.rung}: one plain process against a {meta['ranks']}-rank ZeRO-3 SLURM job",
        ["what", "max difference"],
        rows,
        result,
        args.out,
    )


if __name__ == "__main__":
    main()
