"""The one line a run ends with on the command line: the stage that ran, or its report's summary,
whichever kind of report it made (one task, or held-out tasks)."""

from __future__ import annotations

import json
from pathlib import Path

from pdiff.config import Stage
from pdiff.evaluation.report import one_task_summary_line
from pdiff.heldout.report import heldout_summary_line


def summary_line(stage: str, output_dir: Path, report: dict | None, seconds: float) -> str:
    """The one line a run ends with: the report's accuracies, or the stage that ran."""
    if report is None:
        return f"pdiff: stage={stage} done in {seconds:.1f} s -> {output_dir}"
    if "family" in report:
        return heldout_summary_line(report, seconds, output_dir)
    return one_task_summary_line(report, seconds, output_dir)


def own_report(output_dir: Path, stage: Stage) -> dict | None:
    """The report a run of `stage` into `output_dir` ends with: its report.json when the run
    evaluates."""
    path = output_dir / "report.json"
    return (
        json.loads(path.read_text())
        if stage in (Stage.all, Stage.evaluate) and path.is_file()
        else None
    )
