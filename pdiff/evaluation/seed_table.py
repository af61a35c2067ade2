"""A sweep's reports side by side: the mean and std of each figure over its points (e.g. 3 seeds)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pdiff import atomic

SWEEP_TABLE = "sweep.md"
SWEEP_JSON = "sweep.json"
STAGES = ("collect", "train", "generate", "evaluate")


def sweep_group(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep: its folder's last two parts (e.g. mnist1d_mlp/k200_seed0)."""
    parts = Path(str(sweep_dir)).expanduser().resolve().parts
    return "/".join(parts[-2:])[:128]


def report_figures(report: dict) -> dict[str, float]:
    """The figures of one report that a sweep compares, by name."""
    memo, verdict = report["memorization"], report.get("verdict", {})
    original, generated = report["original"], report["generated"]
    validation = report.get("validation", {})
    figures = {
        "original mean": original["mean"],
        "original best": original["best"],
        "original spread (best - min)": original["best"] - original["min"],
        "original pairwise error IoU": memo["originals"]["pairwise_iou_within"],
        "generated mean": generated["mean"],
        "generated best": generated["best"],
        "generated min": generated["min"],
        "generated similarity (max IoU)": memo["generated"]["max_iou_mean"],
        "generated novel fraction": memo["generated"]["novel_fraction"],
        "original validation mean": validation.get("original", {}).get("mean"),
        "generated validation mean": validation.get("generated", {}).get("mean"),
    }
    picked, cost = report.get("keep_best"), report.get("cost", {})
    if picked:
        figures.update(
            {
                "kept generated: test": picked["generated"]["kept_test"],
                "kept trained: test": picked["trained"]["kept_test"],
                "kept generated - kept trained (points)": picked["margin"],
            }
        )
    figures.update(
        {
            "seconds per SGD run": cost.get("sgd_per_run_s"),
            "seconds per generated model (amortised)": cost.get("generated_amortised_s"),
        }
    )
    for family in verdict.get("families", []):
        figures[f"margin vs {family} (points)"] = verdict[family]["acc_margin"]
    figures["stage time (s)"] = sum(
        seconds
        for phase, seconds in report["timings_s"].items()  # collect_*: inside
        if phase.split("_")[0] in STAGES and not phase.startswith("collect_")
    )
    return {name: float(value) for name, value in figures.items() if value is not None}


def sweep_table(sweep_dir: Path) -> tuple[list[str], list[list]]:
    """(point names, rows [figure, mean, std, value per point]) over every DIR/*/report.json."""
    paths = sorted(Path(sweep_dir).glob("*/report.json"))
    points = [path.parent.name for path in paths]
    per_point = [report_figures(json.loads(path.read_text())) for path in paths]
    rows = []
    for name in per_point[0] if per_point else []:
        values = [figures.get(name, math.nan) for figures in per_point]
        mean = sum(values) / len(values)
        std = (
            math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            if len(values) > 1
            else 0.0
        )
        rows.append([name, round(mean, 4), round(std, 4), *[round(v, 4) for v in values]])
    return points, rows


def family_table(sweep_dir: Path) -> tuple[list[str], list[list]]:
    """(point names, rows [family, beaten on, tied on, lost on, then 'status margin [low, high]' per
    point])."""
    paths = sorted(Path(sweep_dir).glob("*/report.json"))
    points = [path.parent.name for path in paths]
    verdicts = [json.loads(path.read_text())["verdict"] for path in paths]
    rows = []
    for family in verdicts[0]["families"] if verdicts else []:
        entries = [verdict[family] for verdict in verdicts]
        counts = [
            f"{sum(e['status'] == status for e in entries)}/{len(entries)}"
            for status in ("beats", "ties", "loses")
        ]
        rows.append(
            [
                family,
                *counts,
                *(
                    f"{e['status']} {e['acc_margin']:+.2f} [{e['low']:+.2f}, {e['high']:+.2f}]"
                    for e in entries
                ),
            ]
        )
    return points, rows


def render_table(points: list[str], rows: list[list]) -> str:
    return render_rows(["figure", "mean", "std", *points], rows)


def render_rows(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_sweep_summary(sweep_dir: Path) -> tuple[list[str], list[list]]:
    """sweep.md and sweep.json in the sweep folder; returns the markdown."""
    points, rows = sweep_table(sweep_dir)
    _, families = family_table(sweep_dir)
    markdown = (
        f"# pdiff sweep: {len(points)} runs in {sweep_dir}\n\n"
        + render_table(points, rows)
        + "\n## Verdict per family (status, margin in points, 95% interval)\n\n"
        + render_rows(["family", "beaten on", "tied on", "lost on", *points], families)
    )
    atomic.write_text(Path(sweep_dir) / SWEEP_TABLE, markdown)
    atomic.write_json(
        Path(sweep_dir) / SWEEP_JSON,
        {
            "points": points,
            "columns": ["figure", "mean", "std", *points],
            "rows": rows,
            "families": families,
        },
    )
    return markdown
