"""Cluster overhead and collection speed-up on the SLURM cluster at hand (the local one by default).

    python benchmarks/cluster.py --out FILE.json [hydra overrides for every run ...]

1. The default main job in-process vs. the same job as a SLURM job chain (submit -> report).
2. Collection of --collect-k checkpoints with 1 vs 2 array tasks (1 CPU, 1 thread each): wall time
   from the base model being written to the last collection run being written.
Run it on an otherwise idle machine: other load distorts both comparisons.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from table_output import emit

from pdiff.zoo.store import run_path

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline")


def _run(script: str, args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / "launch" / script), *args],
        env=ENV,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"{script} {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def _queue_empty() -> None:
    while subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
        time.sleep(0.5)


def _collection_wall(root: Path, runs: int, k: int, overrides: list[str]) -> float:
    out = root / f"collect_{runs}"
    args = [
        *overrides,
        f"task.param.k={k}",
        f"task.collect.runs={runs}",
        "threads=1",
        "cluster.cpus_per_task=1",
        f"paths.output_dir={out}",
    ]
    _queue_empty()
    _run("submit.py", args)
    # Only the collection is timed: the rest of the chain is cancelled while it waits on its
    # dependency.
    for name in ("pdiff-train", "pdiff-report"):
        subprocess.run(["scancel", f"--name={name}"], check=False)
    run_files = [run_path(out / "zoo", index, runs) for index in range(runs)]
    while not all(path.is_file() for path in run_files):
        time.sleep(0.5)
    base = (out / "zoo" / "base_model.safetensors").stat().st_mtime
    return max(path.stat().st_mtime for path in run_files) - base


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--collect-k", type=int, default=1000, help="checkpoints in the collection comparison"
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pdiff-cluster-bench-"))
    in_process = _run("sweep.py", [*args.overrides, f"paths.output_dir={root / 'in_process'}"])
    chain = _run(
        "submit.py",
        [
            *args.overrides,
            "cluster.cpus_per_task=2",
            f"paths.output_dir={root / 'chain'}",
            "--wait",
        ],
    )
    one, two = (_collection_wall(root, runs, args.collect_k, args.overrides) for runs in (1, 2))
    result = {
        "in_process_s": round(in_process, 2),
        "slurm_chain_s": round(chain, 2),
        "cluster_overhead_s": round(chain - in_process, 2),
        "chain_over_in_process": round(chain / in_process, 3),
        "collect_1_task_s": round(one, 2),
        "collect_2_tasks_s": round(two, 2),
        "collect_speedup_2_tasks": round(one / two, 3),
        "collect_k": args.collect_k,
        "overrides": args.overrides,
        "folder": str(root),
    }
    rows = [
        [key, value]
        for key, value in result.items()
        if key not in ("overrides", "folder", "collect_k")
    ]
    emit("pdiff on SLURM", ["measure", "value"], rows, result, args.out)


if __name__ == "__main__":
    main()
