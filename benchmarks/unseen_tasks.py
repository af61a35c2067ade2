"""Weights for tasks the zoo never saw: the whole pipeline (in-process) on each held-out split and
seed, then one table of every baseline's margin to the generated models, the fine-tuning sweep
("generation is worth N labelled steps"), and the generated models' accuracy by region.

    python benchmarks/unseen_tasks.py --out FILE.json [--family subsets|variants] [--seeds 0 1 2]
        [--splits complement pair] [--eval-split test|val] [--work DIR] [-- hydra overrides ...]

Each seed draws its own split of the tasks (task.family.split_seed follows the seed). Each (seed,
split) runs experiment=heldout_<family> into WORK/<family>-<split>-seed<seed> (a finished folder is
reused, as the pipeline skips finished stages; --eval-split val and test share its zoo, generator and
generated models). The default scores test tasks; choose settings with --eval-split val, which scores
validation tasks only. family=variants has one split (range: held-out tasks inside and outside the
training range). JSON: `rows` (one per family, split, seed and scored task, every baseline),
`summary` (one per family, split, seed and baseline: margin, low, high, status), `pooled` (with
several seeds: each split's margins over every seed's tasks together), `worth` (the sweep per
point), `memorization` and `split_check` (from the zoo's stored tasks; must be all 0).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from compose import compose_config
from table_output import emit

from pdiff.config import BootstrapConfig
from pdiff.heldout.evaluate import REFERENCE, summarize_margins
from pdiff.heldout.report import group_mean, region_groups, worth_sentence
from pdiff.pipeline.run import run_pipeline

SPLITS = {"subsets": ("complement", "pair"), "variants": ("range",)}


def run_point(
    family: str, split: str, seed: int, eval_split: str, work: Path, overrides: list[str]
) -> dict:
    cfg = compose_config(
        [
            f"experiment=heldout_{family}",
            *([f"task.family.split={split}"] if family == "subsets" else []),
            f"seed={seed}",
            f"task.family.eval_split={eval_split}",
            *overrides,
            f"paths.output_dir={work / f'{family}-{split}-seed{seed}'}",
        ]
    )
    return run_pipeline(cfg)


def pooled_margins(rows: list[dict]) -> dict[str, dict]:
    """Each baseline's margin over every seed's scored tasks together (each seed its own held-out
    set), with a 95% bootstrap interval over those tasks."""
    names = tuple(name for name in rows[0]["baselines"] if name != REFERENCE)
    return summarize_margins(rows, names, 0, BootstrapConfig(resamples=2000, confidence=0.95))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--family", choices=tuple(SPLITS), default="subsets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--splits",
        choices=sorted({split for splits in SPLITS.values() for split in splits}),
        nargs="+",
        help="held-out splits (default: every split of the family)",
    )
    parser.add_argument(
        "--eval-split",
        choices=("test", "val"),
        default="test",
        help="where held-out tasks are scored: val while choosing settings, test once at the end",
    )
    parser.add_argument("--work", type=Path, help="run folders (default: a fresh temporary folder)")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides for every run, e.g. generator.optim.steps=1000",
    )
    args = parser.parse_args()
    splits = args.splits or list(SPLITS[args.family])
    wrong = sorted(set(splits) - set(SPLITS[args.family]))
    if wrong:
        parser.error(
            f"--splits {' '.join(wrong)} is not a split of family {args.family}; allowed: "
            f"{', '.join(SPLITS[args.family])}"
        )
    work = args.work or Path(tempfile.mkdtemp(prefix="pdiff-unseen-"))
    result = {
        "family": args.family,
        "seeds": args.seeds,
        "eval_split": args.eval_split,
        "overrides": args.overrides,
        "work": str(work),
        "rows": [],
        "summary": [],
        "split_check": [],
        "worth": [],
        "pooled": [],
        "memorization": [],
        "seconds": {},
    }
    table = []
    for seed in args.seeds:
        for split in splits:
            started = time.perf_counter()
            report = run_point(args.family, split, seed, args.eval_split, work, args.overrides)
            result["seconds"][f"{split}-seed{seed}"] = round(time.perf_counter() - started, 1)
            point = {"family": args.family, "split": split, "seed": seed}
            result["split_check"].append({**point, **report["split_check"]})
            result["worth"].append(
                {**point, "matched_steps": report["matched_steps"], **report["worth"]}
            )
            result["memorization"].append({**point, **report["memorization"]})
            result["rows"] += [
                {
                    **point,
                    "split_seed": report["split_seed"],
                    "task": row["task"],
                    "region": row["region"],
                    "distance": row["distance"],
                    "generated_mean": row["generated_mean"],
                    "baselines": row["baselines"],
                    "memorization": row["memorization"],
                }
                for row in report["rows"]
            ]
            result["summary"] += [
                {**point, "baseline": name, **entry} for name, entry in report["summary"].items()
            ]
            table += [
                [
                    f"{split} seed {seed}",
                    name,
                    f"{entry['baseline_mean']:.2f}",
                    f"{entry['margin']:+.2f}",
                    f"[{entry['low']:+.2f}, {entry['high']:+.2f}]",
                    entry["status"],
                ]
                for name, entry in report["summary"].items()
            ]
            for region, rows in region_groups(report["rows"]).items():
                table.append(
                    [
                        f"{split} seed {seed}",
                        f"{region} ({len(rows)} tasks): generated",
                        f"{group_mean(rows, 'generated'):.2f}",
                        "",
                        "",
                        "",
                    ]
                )
            table.append([f"{split} seed {seed}", worth_sentence(report["worth"]), "", "", "", ""])
    if len(args.seeds) > 1:
        for split in splits:
            rows = [row for row in result["rows"] if row["split"] == split]
            pooled = pooled_margins(rows)
            result["pooled"] += [
                {"split": split, "baseline": name, **entry} for name, entry in pooled.items()
            ]
            table += [
                [
                    f"{split} pooled ({len(rows)} tasks)",
                    name,
                    f"{entry['baseline_mean']:.2f}",
                    f"{entry['margin']:+.2f}",
                    f"[{entry['low']:+.2f}, {entry['high']:+.2f}]",
                    entry["status"],
                ]
                for name, entry in pooled.items()
            ]
    emit(
        f"held-out tasks: {args.family}, eval on {args.eval_split}; margin = generated - baseline, 95% interval over "
        "held-out tasks",
        ["split / seed", "baseline", "accuracy", "margin", "interval", "status"],
        table,
        result,
        args.out,
    )
    print(f"seconds per point: {result['seconds']}")


if __name__ == "__main__":
    main()
