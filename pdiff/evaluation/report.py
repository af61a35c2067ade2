"""The one-task report's data (report.json's fixed keys), its one-line summary, and the writing of
report.json, report.md and its figures."""

from __future__ import annotations

from pathlib import Path

import torch

from pdiff import atomic
from pdiff.evaluation.report_markdown import render_one_task_markdown
from pdiff.evaluation.report_plots import (
    ACCURACY_PLOT,
    CURVES_PLOT,
    FRONTIER_PLOT,
    MEMORIZATION_PLOT,
    PROJECTION_PLOT,
    plot_accuracies,
    plot_frontier,
    plot_memorization,
    plot_projection,
    plot_training_curves,
)
from pdiff.evaluation.verdict import verdict_line
from pdiff.evaluation.zoo_check import zoo_word
from pdiff.zoo.params import ParamNormalizer


def summarize_accuracies(accuracy: torch.Tensor) -> dict:
    """n, best, mean, median, min, std of accuracies in percent (the report's `original`,
    `generated` and `validation` entries)."""
    acc = accuracy.double()
    return {
        "n": int(acc.numel()),
        "best": round(float(acc.max()), 4),
        "mean": round(float(acc.mean()), 4),
        "median": round(float(acc.median()), 4),
        "min": round(float(acc.min()), 4),
        "std": round(float(acc.std()) if acc.numel() > 1 else 0.0, 4),
    }


def build_report(
    task: str,
    k: int,
    param_count: int,
    original: torch.Tensor,
    generated: torch.Tensor,
    timings: dict[str, float],
) -> dict:
    return {
        "task": task,
        "k": k,
        "param_count": param_count,
        "original": summarize_accuracies(original),
        "generated": summarize_accuracies(generated),
        "timings_s": {key: round(v, 3) for key, v in timings.items()},
    }


def write_report(
    directory: Path,
    report: dict,
    accuracies: dict[str, torch.Tensor],
    per_model: dict[str, torch.Tensor],
    n_test: int,
    vectors: dict[str, torch.Tensor],
    verdict_lines: list[str],
    *,
    phases: dict[str, str],
    normalizer: ParamNormalizer | None = None,
) -> None:
    """report.json, report.md and its plots in `directory`; `phases` ({metric prefix: title}, the
    design's training phases) chooses the training-curve panels; `vectors` (originals, generated)
    are projected in the space `normalizer` makes."""
    plot_accuracies(
        directory / ACCURACY_PLOT, accuracies["originals"], accuracies["generated"], n_test
    )
    plot_memorization(directory / MEMORIZATION_PLOT, accuracies, per_model)
    plot_frontier(directory / FRONTIER_PLOT, report, accuracies, per_model)
    plot_projection(directory / PROJECTION_PLOT, vectors, normalizer)
    plot_training_curves(directory / CURVES_PLOT, directory / "metrics.jsonl", phases)
    atomic.write_json(directory / "report.json", report)
    atomic.write_text(directory / "report.md", render_one_task_markdown(report, verdict_lines))


def one_task_summary_line(report: dict, seconds: float, output_dir: Path) -> str:
    """The one line a one-task run ends with: both populations' accuracies and the verdict."""
    o, g, verdict = report["original"], report["generated"], report["verdict"]
    scored = " (scored on validation)" if report.get("split") == "val" else ""
    return (
        f"pdiff{scored}: {report['task']} K={report['k']} D={report['param_count']} | original "
        f"best/mean/min {o['best']:.2f}/{o['mean']:.2f}/{o['min']:.2f} | generated best/mean/min "
        f"{g['best']:.2f}/{g['mean']:.2f}/{g['min']:.2f} (n={g['n']}) | verdict, margin "
        f"[{100 * verdict['confidence']:g}% interval]: {verdict_line(verdict)} | "
        f"{zoo_word(report['zoo_check'])} | {seconds:.1f} s | {output_dir / 'report.md'}"
    )
