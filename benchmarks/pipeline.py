"""Time every stage of the default main job (in-process) and write the table as JSON.

python benchmarks/pipeline.py --out FILE.json [--output-dir DIR] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from compose import compose_config
from table_output import emit

from pdiff.pipeline.run import run_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument(
        "--output-dir", type=Path, help="run folder (default: a fresh temporary folder)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. seed=1")
    args = parser.parse_args()
    output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="pdiff-bench-"))
    if output_dir.exists() and any(output_dir.iterdir()):
        parser.error(
            f"--output-dir {output_dir} is not empty: a benchmark must time every stage from scratch"
        )
    cfg = compose_config([*args.overrides, f"paths.output_dir={output_dir}"])
    started = time.perf_counter()
    report = run_pipeline(cfg)
    total = time.perf_counter() - started
    result = {
        "overrides": args.overrides,
        "output_dir": str(output_dir),
        "total_s": round(total, 2),
        "stages_s": report["timings_s"],
        "original": report["original"],
        "generated": report["generated"],
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
    }
    rows = [
        [stage, f"{seconds:.1f}", f"{100 * seconds / total:.0f}%"]
        for stage, seconds in report["timings_s"].items()
    ]
    emit(
        f"pdiff main job: {report['task']}, K={report['k']}, D={report['param_count']}",
        ["stage", "seconds", "share"],
        [*rows, ["total (wall clock)", f"{total:.1f}", "100%"]],
        result,
        args.out,
    )


if __name__ == "__main__":
    main()
