"""The held-out-task report: a table of margins with intervals, the per-task rows by distance, a
plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pdiff import atomic  # noqa: E402
from pdiff.evaluation.verdict import BEATS, LOSES  # noqa: E402
from pdiff.heldout.evaluate import BASELINES, REFERENCE  # noqa: E402

MARGIN_PLOT = "heldout_margins.png"
BASELINE_WORDS = {
    REFERENCE: "trained on the held-out task (the reference)",
    "nearest": "the nearest training task's models (Hamming)",
    "nearest_symmetric": "the nearest allowing a label swap (complement, outputs swapped)",
    "nearest_finetuned": (
        "the nearest (with swap) fine-tuned on the task, compute matched to generation"
    ),
    "average_k_nearest": "the weight average of the k nearest tasks' last checkpoints (with swap)",
    "ridge": "ridge regression from descriptor to weights",
    "composed": "composed from the C-class base model",
    "random_descriptor": "the generator given a random descriptor",
    "majority": "the majority-class rate",
}


def distance_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by their task's distance to the nearest training task (with the family's symmetry)."""
    groups: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["distance"]):
        groups.setdefault(f"distance {row['distance']}", []).append(row)
    return groups


def group_mean(rows: list[dict], key: str) -> float:
    """The mean over `rows` of the generated models' accuracy ("generated") or of baseline
    `key`'s."""
    values = [
        row["generated_mean"] if key == "generated" else row["baselines"][key] for row in rows
    ]
    return sum(values) / len(values)


def render_heldout_markdown(report: dict) -> str:
    """report.md of a run on held-out tasks."""
    lines = [
        f"# Weights for tasks the zoo never saw: {report['task']} ({report['family']}, "
        f"split {report['split']})",
        "",
        f"{len(report['rows'])} held-out tasks, scored on the {report['eval_split']} split; the "
        f"zoo holds {report['k']} checkpoints of {report['dim']} parameters from "
        f"{report['train_tasks']} training tasks. "
        f"Split check (must be 0): {report['split_check']}.",
        "",
        f"Generated: {report['generated_mean']:.2f}% mean over held-out tasks. Margin = generated "
        f"minus baseline, mean over held-out tasks, {100 * report['confidence']:g}% bootstrap "
        "interval over the tasks.",
        "",
        "| baseline | its accuracy | margin | interval | status |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["summary"].items():
        lines.append(
            f"| {BASELINE_WORDS[name]} | {entry['baseline_mean']:.2f} | {entry['margin']:+.2f} | "
            f"[{entry['low']:+.2f}, {entry['high']:+.2f}] | {entry['status']} |"
        )
    lines += [
        "",
        f"Fine-tuning ran {report['finetune_steps']} SGD steps (the FLOPs of generating one "
        "model).",
        "",
        "## By distance to the nearest training task",
        "",
        "| distance | tasks | generated | trained | nearest (swap) | ridge | composed |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, rows in distance_groups(report["rows"]).items():
        means = {
            key: group_mean(rows, key)
            for key in ("generated", REFERENCE, "nearest_symmetric", "ridge", "composed")
        }
        lines.append(
            f"| {label} | {len(rows)} | "
            + " | ".join(f"{value:.2f}" for value in means.values())
            + " |"
        )
    memo = report["memorization"]
    lines += [
        "",
        f"Memorisation: a generated model lies {memo['generated_to_zoo']:.3f} (L2) from its "
        "nearest zoo checkpoint; a model trained on the held-out task lies "
        f"{memo['trained_to_zoo']:.3f}. {100 * memo['nearest_row_from_nearest_task']:.0f}% of the "
        "generated models' nearest zoo checkpoints belong to a nearest training task.",
        "",
        f"![margins]({MARGIN_PLOT})",
        "",
    ]
    return "\n".join(lines)


def plot_margins(path: Path, summary: dict) -> None:
    names = [name for name in (REFERENCE, *BASELINES) if name in summary]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    for row, name in enumerate(names):
        entry = summary[name]
        colour = {BEATS: "tab:green", LOSES: "tab:red"}.get(entry["status"], "tab:grey")
        ax.errorbar(
            entry["margin"],
            row,
            xerr=[[entry["margin"] - entry["low"]], [entry["high"] - entry["margin"]]],
            fmt="o",
            color=colour,
            capsize=3,
        )
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("generated minus baseline, accuracy points (95% interval over held-out tasks)")
    ax.set_title("Held-out tasks: where the generated models stand")
    fig.tight_layout()
    atomic.write_file(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    )
    plt.close(fig)


def write_task_report(directory: Path, report: dict) -> None:
    plot_margins(directory / MARGIN_PLOT, report["summary"])
    atomic.write_json(directory / "report.json", report)
    atomic.write_text(directory / "report.md", render_heldout_markdown(report))


def heldout_summary_line(report: dict, seconds: float, output_dir: Path) -> str:
    """The one line a run on held-out tasks ends with."""
    summary = report["summary"]
    parts = " ".join(
        f"{name} {entry['margin']:+.2f} [{entry['low']:+.2f},{entry['high']:+.2f}]"
        for name in ("nearest_symmetric", "random_descriptor", REFERENCE)
        if (entry := summary.get(name)) is not None
    )
    return (
        f"pdiff: {report['task']} {len(report['rows'])} held-out tasks ({report['split']}) | "
        f"generated {report['generated_mean']:.2f}% | margin vs {parts} | {seconds:.1f} s | "
        f"{output_dir / 'report.md'}"
    )
