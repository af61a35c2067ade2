"""The held-out-task report: a table of margins with intervals, the step sweep and what generation
is worth in labelled steps, the per-task rows by region (distance, or inside and outside the
training range), the memorisation distances, a plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pdiff import atomic  # noqa: E402
from pdiff.evaluation.verdict import BEATS, LOSES  # noqa: E402
from pdiff.heldout.evaluate import MATCHED, REFERENCE  # noqa: E402

MARGIN_PLOT = "heldout_margins.png"
BASELINE_WORDS = {
    REFERENCE: "trained on the held-out task (the reference)",
    "linear_probe": "linear probe: the base model frozen, the head trained on the task",
    "nearest": "the nearest training task's models",
    "nearest_symmetric": "the nearest allowing a label swap (complement, outputs swapped)",
    MATCHED: "the nearest fine-tuned on the task, compute matched to generation",
    "average_k_nearest": "the weight average of the k nearest tasks' last checkpoints",
    "ridge": "ridge regression from descriptor to weights (penalty: leave one task out)",
    "composed": "composed from the C-class base model",
    "pooled": "one pooled model with the descriptor as an input",
    "shuffled_descriptor": "the generator given another held-out task's descriptor",
    "random_descriptor": "the generator given an unused task's descriptor",
    "majority": "the majority-class rate",
}


def words(name: str) -> str:
    if name.startswith("finetuned_") and name != MATCHED:
        return f"the nearest fine-tuned {name.removeprefix('finetuned_')} SGD steps"
    return BASELINE_WORDS[name]


def region_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by their region: distance to the nearest training task, or inside/outside the range."""
    groups: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["region"], r["distance"])):
        groups.setdefault(row["region"], []).append(row)
    return groups


def group_mean(rows: list[dict], key: str) -> float:
    """The mean over `rows` of the generated models' accuracy ("generated") or of baseline
    `key`'s."""
    values = [
        row["generated_mean"] if key == "generated" else row["baselines"][key] for row in rows
    ]
    return sum(values) / len(values)


def worth_sentence(worth: dict) -> str:
    """ "Generation is worth N labelled steps" from the sweep."""
    if worth["steps"] is not None:
        return f"Generation is worth {worth['steps']:g} labelled SGD steps from the nearest task."
    return (
        f"Generation is worth more than {worth['beyond']} labelled SGD steps from the nearest task."
    )


def render_heldout_markdown(report: dict) -> str:
    """report.md of a run on held-out tasks."""
    lines = [
        f"# Weights for tasks the zoo never saw: {report['task']} ({report['family']}, "
        f"split {report['split']}, split seed {report['split_seed']})",
        "",
        f"{len(report['rows'])} {report['eval_split']} tasks, scored on their "
        f"{report['eval_split']} samples; the zoo holds {report['k']} checkpoints of "
        f"{report['dim']} parameters from {report['train_tasks']} training tasks. "
        f"Split check from the zoo's stored tasks (must be 0): {report['split_check']}.",
        "",
        f"Generated: {report['generated_mean']:.2f}% mean over the tasks. Margin = generated "
        f"minus baseline, mean over the tasks, {100 * report['confidence']:g}% bootstrap "
        "interval over the tasks.",
        "",
        "| baseline | its accuracy | margin | interval | status |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["summary"].items():
        lines.append(
            f"| {words(name)} | {entry['baseline_mean']:.2f} | {entry['margin']:+.2f} | "
            f"[{entry['low']:+.2f}, {entry['high']:+.2f}] | {entry['status']} |"
        )
    worth = report["worth"]
    lines += [
        "",
        "## The fine-tuning sweep",
        "",
        "| SGD steps from the nearest task | " + " | ".join(worth["curve"]) + " | generated |",
        "|---" * (len(worth["curve"]) + 2) + "|",
        "| accuracy | "
        + " | ".join(f"{value:.2f}" for value in worth["curve"].values())
        + f" | {worth['generated']:.2f} |",
        "",
        f"{worth_sentence(worth)} The compute-matched count is {report['matched_steps']} steps "
        "(the FLOPs of generating one model).",
        "",
        "## By region",
        "",
        "| region | tasks | generated | trained | nearest | ridge | k-nearest average |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, rows in region_groups(report["rows"]).items():
        means = [
            group_mean(rows, key)
            for key in ("generated", REFERENCE, "nearest", "ridge", "average_k_nearest")
        ]
        lines.append(
            f"| {label} | {len(rows)} | " + " | ".join(f"{value:.2f}" for value in means) + " |"
        )
    memo = report["memorization"]
    lines += [
        "",
        f"Memorisation (L2 to the nearest zoo checkpoint; models trained on the task are projected "
        f"onto the generator's basis first): generated {memo['generated_to_zoo']:.3f}, trained "
        f"{memo['trained_to_zoo']:.3f}; the head alone: generated "
        f"{memo['generated_head_to_zoo']:.3f}, trained {memo['trained_head_to_zoo']:.3f}. "
        f"{100 * memo['nearest_row_from_nearest_task']:.0f}% of the generated models' nearest zoo "
        "checkpoints belong to a nearest training task.",
        "",
        f"![margins]({MARGIN_PLOT})",
        "",
    ]
    return "\n".join(lines)


def plot_margins(path: Path, summary: dict) -> None:
    names = list(summary)
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(names) + 1.2))
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
        for name in ("ridge", "average_k_nearest", "nearest", REFERENCE)
        if (entry := summary.get(name)) is not None
    )
    worth = report["worth"]
    steps = f"{worth['steps']:g}" if worth["steps"] is not None else f">{worth['beyond']}"
    return (
        f"pdiff: {report['task']} {len(report['rows'])} {report['eval_split']} tasks "
        f"({report['split']}) | generated {report['generated_mean']:.2f}% | margin vs {parts} | "
        f"worth {steps} steps | {seconds:.1f} s | {output_dir / 'report.md'}"
    )
