"""The one-task report sent to the run's tracker (W&B when configured): its figures, accuracies,
tables and plots."""

from __future__ import annotations

from pathlib import Path

import torch

from pdiff.tracking import Tracker


def log_report(
    tracker: Tracker, report: dict, accuracies: dict[str, torch.Tensor], images: list[Path]
) -> None:
    """The report's figures, accuracy histograms, tables and plots to the tracker (W&B when
    configured)."""
    tracker.log(
        {
            f"eval/{group}_{stat}": value
            for group in ("original", "generated")
            for stat, value in report[group].items()
        }
    )
    table = report["memorization"]
    tracker.log_artifacts(
        {f"eval/{name}_acc": acc.tolist() for name, acc in accuracies.items()},
        {
            "eval/report": [["models", "n", "best", "mean", "median", "min", "std"]]
            + [[g, *report[g].values()] for g in ("original", "generated")],
            "eval/memorization": [["models", *table["generated"]]]
            + [[name, *row.values()] for name, row in table.items() if isinstance(row, dict)],
        },
        images=images,
    )
    tracker.summary(
        {f"{g}/{s}": v for g in ("original", "generated") for s, v in report[g].items()}
    )
