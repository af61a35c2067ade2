"""Generated whole networks up the scale ladder: every design at every rung, judged by the report's
verdict.

    python benchmarks/scale_quality.py --out FILE.json [--rungs 1e4 1e5 1e6] [--seeds 0 1 2]
        [--designs flow_pca token token_independent latent] [--threads T] [--eval-split val|test]
        [--tag NAME] [--work-dir DIR] [--budget-s S] [--set OVERRIDE ...]

Rungs are experiments of one MLP family on MNIST-1D, every parameter generated: 1e4 =
experiment=mnist1d_full (7,434 parameters), 1e5 = mnist1d_mlp_1e5 (78,858), 1e6 = mnist1d_mlp_1e6
(1,101,834). Each (rung, seed) collects its zoo once (stage=collect); each design then trains,
generates and evaluates on a linked copy of that zoo in its own process, timed, with its peak RSS. A
design that runs past --budget-s or out of memory is a row that says so. --set adds overrides to
every run (the tests shrink the ladder's smallest rung with it).

--threads T runs every process with T threads: a zoo collected with other threads differs slightly
(as across the nodes of a cluster), so each thread count has its own zoo. --eval-split val scores
everything on the validation split (evaluate.split=val) to choose settings without reading the test
labels (the folder of a design scored so is <design>-val); --tag names a variant of a design (its
folder is <design>-<tag>), with its own --set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf
from table_output import emit

from pdiff.pipeline.output_dir import mark_made_by_pdiff

REPO = Path(__file__).resolve().parents[1]
RUNGS = {"1e4": "mnist1d_full", "1e5": "mnist1d_mlp_1e5", "1e6": "mnist1d_mlp_1e6"}
# the token design as docs/large_models.md runs it on whole networks: the best quarter of the zoo,
# 32 code components (sampled by its default, sampler=ddim10)
TOKEN = [
    "generator=token",
    "diffusion.optim.batch_size=32",
    "ae.code_components=32",
    "generator.train_fraction=0.25",
]
DESIGNS = {
    "flow_pca": [
        "generator=flow_pca"
    ],  # the reference: a flow on 16 PCA coefficients (DeepWeightFlow's idea)
    "token": TOKEN,  # pdiff's large-D design: a model code sampled first, then every window given it
    "token_independent": [
        *TOKEN,
        "ae.code_components=0",
        "generate.target_quantile=null",
    ],  # its predecessor: windows sampled independently
    "latent": ["generator=latent"],  # p-diff's own autoencoder over the whole vector
}
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "MemoryError", "DefaultCPUAllocator")


def run(overrides: list[str], folder: Path, budget_s: float) -> dict:
    """launch/sweep.py with `overrides` into `folder`: its status, wall seconds and peak RSS (GB)."""
    log = folder.with_suffix(".log")
    started = time.perf_counter()
    with log.open("w") as stream:
        process = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "launch" / "sweep.py"),
                *overrides,
                f"paths.output_dir={folder}",
            ],
            stdout=stream,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        timed_out = False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > budget_s:
                os.killpg(process.pid, signal.SIGKILL)
                timed_out = True
            time.sleep(0.5)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    tail = log.read_text(errors="replace")[-4000:]
    if timed_out:
        outcome = f"out of time: stopped after {budget_s:.0f} s"
    elif code == 0:
        outcome = "ok"
    elif code == -signal.SIGKILL or any(marker in tail for marker in OUT_OF_MEMORY):
        outcome = "out of memory"
    else:
        outcome = "failed: " + (tail.strip().splitlines() or ["(no output)"])[-1][:200]
    return {
        "status": outcome,
        "process_s": round(seconds, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
        "log": str(log),
    }


def zoo_folder(work: Path, rung: str, seed: int, threads: int) -> Path:
    """Where a (rung, seed, thread count)'s runs live (threads 0: torch's default)."""
    return work / rung / (f"seed_{seed}" if not threads else f"seed_{seed}_threads_{threads}")


def collect(
    rung: str, seed: int, work: Path, extra: list[str], budget_s: float, threads: int = 0
) -> tuple[Path, dict]:
    folder = zoo_folder(work, rung, seed, threads) / "zoo"
    if (folder / "zoo" / "zoo.safetensors").is_file():
        return folder, {"status": "ok (reused)"}
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder, run(
        [f"experiment={RUNGS[rung]}", f"seed={seed}", "stage=collect", *extra], folder, budget_s
    )


def linked_copy(zoo_run: Path, folder: Path) -> None:
    """The collected zoo into a design's folder as hard links (later stages never write into zoo/),
    with the collection's timings so that the report counts them."""
    if not (folder / "zoo").is_dir():
        mark_made_by_pdiff(folder)
        shutil.copytree(zoo_run / "zoo", folder / "zoo", copy_function=os.link)
    timings = json.loads((zoo_run / "timings.json").read_text())
    (folder / "timings.json").write_text(
        json.dumps({k: v for k, v in timings.items() if k.startswith("collect")})
    )


def summarise(rung: str, design: str, seed: int, folder: Path, process: dict) -> dict:
    row = {"rung": rung, "design": design, "seed": seed, **process}
    config = folder / "config.yaml"
    if config.is_file():  # what the run was: its thread count and the split it was scored on
        settings = OmegaConf.load(config)
        row.update({"threads": settings.threads, "split": str(settings.evaluate.split)})
    report_path = folder / "report.json"
    if process["status"] != "ok" or not report_path.is_file():
        return row
    report = json.loads(report_path.read_text())
    memorization, timings = report["memorization"], report["timings_s"]
    meta = json.loads((folder / "generator" / "generator.json").read_text())
    row.update(
        {
            "D": report["param_count"],
            "K": report["k"],
            "n_generated": report["generated"]["n"],
            "original_mean": report["original"]["mean"],
            "original_interval": memorization["originals"]["acc_interval"],
            "generated_mean": report["generated"]["mean"],
            "generated_interval": memorization["generated"]["acc_interval"],
            "generated_best": report["generated"]["best"],
            "validation": {
                "original_mean": report["validation"]["original"]["mean"],
                "generated_mean": report["validation"]["generated"]["mean"],
            },
            "verdict": {
                family: {
                    key: report["verdict"][family][key]
                    for key in ("status", "acc_margin", "low", "high")
                }
                for family in report["verdict"]["families"]
            },
            "keep_best": {
                key: report["keep_best"][key] for key in ("n", "margin", "margin_interval")
            },
            "stage_s": {
                key: value for key, value in timings.items() if not key.startswith("collect_")
            },
            "grows_with_D": {
                "zoo_mb": round((folder / "zoo" / "zoo.safetensors").stat().st_size / 2**20, 1),
                "generator_mb": round(
                    sum(
                        path.stat().st_size for path in (folder / "generator").glob("*.safetensors")
                    )
                    / 2**20,
                    1,
                ),
                **{
                    key: meta[key]
                    for key in ("tokens", "windows", "code_components", "pca_components")
                    if key in meta
                },
            },
        }
    )
    return row


def table_row(row: dict) -> list:
    if "D" not in row:
        return [
            row["rung"],
            row["design"],
            row["seed"],
            "",
            "",
            "",
            row["status"],
            "",
            "",
            "",
            "",
            f"{row.get('peak_rss_gb', '')}",
        ]
    statuses = [entry["status"] for entry in row["verdict"].values()]
    noise = row["verdict"]["noise"]
    stages = row["stage_s"]
    train = sum(value for key, value in stages.items() if key.startswith(("train", "fit")))
    return [
        row["rung"],
        row["design"],
        row["seed"],
        f"{row['D']:,}",
        f"{row['original_mean']:.2f}",
        f"{row['generated_mean']:.2f}",
        f"beats {statuses.count('beats')} / ties {statuses.count('ties')} / loses {statuses.count('loses')}",
        f"{noise['acc_margin']:+.2f} [{noise['low']:+.2f}, {noise['high']:+.2f}]",
        f"{row['keep_best']['margin']:+.2f}",
        f"{train:.0f}",
        f"{stages.get('generate', 0):.0f}",
        f"{stages.get('evaluate', 0):.0f} / {row['peak_rss_gb']}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--rungs", nargs="+", default=["1e4"], choices=list(RUNGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--designs", nargs="+", default=["flow_pca", "token"], choices=list(DESIGNS)
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="run folders (default: a fresh temporary folder); a (rung, "
        "seed)'s collected zoo found there is reused",
    )
    parser.add_argument(
        "--budget-s", type=float, default=3600.0, help="wall seconds allowed per process"
    )
    parser.add_argument(
        "--set", nargs="*", default=[], dest="extra", help="overrides added to every run"
    )
    parser.add_argument("--threads", type=int, default=0, help="threads per process (0: default)")
    parser.add_argument("--eval-split", choices=["test", "val"], default="test")
    parser.add_argument("--tag", default="", help="a name for this variant of the designs")
    args = parser.parse_args()
    args.extra = [*args.extra, f"threads={args.threads}", f"evaluate.split={args.eval_split}"]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="pdiff-scale-"))
    rows = []
    for rung in args.rungs:
        for seed in args.seeds:
            # collected with the first design's overrides, so that --set may name that design's
            # settings
            zoo_run, collected = collect(
                rung,
                seed,
                work,
                [*DESIGNS[args.designs[0]], *args.extra],
                args.budget_s,
                args.threads,
            )
            print(
                f"{rung} seed {seed}: collect {collected['status']} ({collected.get('process_s', 0)} s)",
                flush=True,
            )
            for design in args.designs:
                name = "-".join(
                    [
                        design,
                        *([args.tag] if args.tag else []),
                        *(["val"] if args.eval_split == "val" else []),
                    ]
                )
                folder = zoo_folder(work, rung, seed, args.threads) / name
                if not collected["status"].startswith("ok"):
                    rows.append(
                        {
                            "rung": rung,
                            "design": name,
                            "seed": seed,
                            "status": f"no zoo: collect {collected['status']}",
                        }
                    )
                    continue
                record = folder.with_suffix(".process.json")
                if (folder / "report.json").is_file() and record.is_file():
                    process = json.loads(record.read_text())
                else:
                    linked_copy(zoo_run, folder)
                    process = run(
                        [
                            f"experiment={RUNGS[rung]}",
                            f"seed={seed}",
                            *DESIGNS[design],
                            *args.extra,
                        ],
                        folder,
                        args.budget_s,
                    )
                    record.write_text(json.dumps(process))
                rows.append(summarise(rung, name, seed, folder, process))
                print(
                    f"{rung} seed {seed} {name}: {process['status']} in {process['process_s']} s",
                    flush=True,
                )
    emit(
        "Generated whole networks up the scale ladder (test accuracy, %)",
        [
            "rung",
            "design",
            "seed",
            "D",
            "originals",
            "generated",
            "verdict families",
            "vs noise [95%]",
            "keep-best margin",
            "train s",
            "generate s",
            "evaluate s / peak RSS GB",
        ],
        [table_row(row) for row in rows],
        {"work_dir": str(work), "extra_overrides": args.extra, "rows": rows},
        args.out,
    )


if __name__ == "__main__":
    main()
