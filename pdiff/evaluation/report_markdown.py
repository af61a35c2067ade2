"""The one-task report's text (report.md): its sections in reading order, each a list of paragraphs
and tables, joined with blank lines."""

from __future__ import annotations

from pdiff.evaluation.baseline_populations import average_labels, averaged_members
from pdiff.evaluation.costs import RECALIBRATION_KEY, RUN_KEY_PREFIX
from pdiff.evaluation.report_plots import (
    ACCURACY_PLOT,
    CURVES_PLOT,
    FRONTIER_PLOT,
    MEMORIZATION_PLOT,
    PROJECTION_PLOT,
)
from pdiff.evaluation.verdict import family_entries
from pdiff.evaluation.zoo_check import zoo_sentence


def render_one_task_markdown(report: dict, verdict_lines: list[str]) -> str:
    """report.md of a one-task run; `verdict_lines` are the verdict's sentences, one bullet each."""
    blocks = [
        *_opening(report),
        *_accuracy_section(report),
        *_verdict_section(report, verdict_lines),
        *_memorization_section(report),
        *_keep_best_section(report["keep_best"]),
        *_cost_section(report["cost"]),
        "## Training",
        f"![training curves]({CURVES_PLOT})",
        "## Time per stage",
        _table(
            ["stage", "seconds"],
            [[stage, f"{seconds:.1f}"] for stage, seconds in _stage_times(report["timings_s"])],
        ),
    ]
    return "\n\n".join(block for block in blocks if block) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table: the header, its rule, one line per row."""
    rule = "|" + "---|" * len(header)
    return "\n".join([_row(header), rule, *(_row(cells) for cells in rows)])


def _row(cells: list[str]) -> str:
    return f"| {' | '.join(cells)} |"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g}%"


def _opening(report: dict) -> list[str]:
    """The title, why the zoo cannot discriminate (when it cannot), the overrides the run never
    read, and what was measured."""
    ignored = report.get("ignored_overrides", [])
    return [
        f"# pdiff report: {report['task']}",
        zoo_sentence(report["zoo_check"], report["n_test"]),
        (
            "Overrides this run never read (ignored): "
            + "; ".join(f"`{line}`" for line in ignored)
            + "."
            if ignored
            else ""
        ),
        f"K = {report['k']} SGD checkpoints of {report['param_count']:,} parameters; accuracy in "
        + (
            f"percent on {report['n_test']:,} **validation** samples (evaluate.split=val: a run "
            "that chooses settings; the test split was not read). Every figure below called test "
            "is validation."
            if report.get("split") == "val"
            else f"percent on {report['n_test']:,} test samples (read only by this stage)."
        ),
    ]


def _accuracy_section(report: dict) -> list[str]:
    """Both accuracy distributions, their difference, and the validation means."""
    rows = []
    for key in ("original", "generated"):
        s = report[key]
        rows.append(
            [key, str(s["n"])]
            + [f"{s[stat]:.2f}" for stat in ("best", "mean", "median", "min")]
            + [f"{s['std']:.3f}"]
        )
    delta = {m: report["generated"][m] - report["original"][m] for m in ("best", "mean", "min")}
    validation = report["validation"]
    return [
        _table(["models", "n", "best", "mean", "median", "min", "std"], rows),
        f"Generated minus original: best {delta['best']:+.2f}, mean {delta['mean']:+.2f}, "
        f"min {delta['min']:+.2f} points. On validation (what the zoo records and designs may "
        f"use): original mean {validation['original']['mean']:.2f}, generated mean "
        f"{validation['generated']['mean']:.2f}.",
        f"![accuracy distributions]({ACCURACY_PLOT})",
    ]


def _verdict_section(report: dict, verdict_lines: list[str]) -> list[str]:
    """Each baseline family's status and margin interval, the verdict's sentences and the frontier
    figure."""
    verdict = report["verdict"]
    percent = _percent(verdict["confidence"])
    rows = []
    for family, entry in family_entries(verdict):
        similarity = entry.get("similarity") if "similarity_margin" in entry else None
        rows.append(
            [
                family,
                f"**{entry['status']}**",
                f"{entry['acc_margin']:+.2f}",
                f"[{entry['low']:+.2f}, {entry['high']:+.2f}]",
                _number(similarity),
            ]
        )
    header = [
        "family",
        "status",
        "accuracy margin (points)",
        f"{percent} interval",
        "baseline similarity",
    ]
    return [
        "## New models or copies?",
        f"Beats every family: **{'yes' if verdict['beats_all'] else 'no'}**. A family is beaten "
        f"only when the {percent} interval of the margin (a paired bootstrap over test samples and "
        "over each population's models) lies above 0, and lost to when it lies below 0; otherwise "
        "it is a tie.",
        _table(header, rows),
        "\n".join(f"- {line}" for line in verdict_lines),
        f"![frontier]({FRONTIER_PLOT})",
    ]


def _memorization_section(report: dict) -> list[str]:
    """What the distances and baselines are, every population's row, and their figures."""
    memo = report["memorization"]
    members = averaged_members(memo)
    average, selected_average = average_labels(members)
    percent = _percent(report["verdict"]["confidence"])
    header = [
        "models",
        "n",
        "acc mean",
        f"{percent} interval",
        "acc best",
        "NN L2 mean",
        "NN cos mean",
        "max IoU mean",
        "IoU within",
        "novel",
    ]
    rows = []
    for name, f in memo.items():
        if isinstance(f, dict):
            low, high = f["acc_interval"]
            rows.append(
                [
                    name,
                    str(f["n"]),
                    f"{f['acc_mean']:.2f}",
                    f"[{low:.2f}, {high:.2f}]",
                    f"{f['acc_best']:.2f}",
                    f"{f['nn_l2_mean']:.4g}",
                    f"{f['nn_cos_mean']:.3g}",
                    f"{f['max_iou_mean']:.3f}",
                    _number(f["pairwise_iou_within"]),
                    f"{100 * f['novel_fraction']:.0f}%",
                ]
            )
    return [
        "Distances are in per-tensor z-scores of the zoo; NN = nearest original (for originals: "
        "nearest other original); IoU compares the sets of misclassified test images; 'novel' = "
        "further from every original than the originals' median nearest-neighbour distance. "
        "Baselines as in Zeng et al. (2025): originals plus Gaussian noise (the frontier's scales, "
        "and the scale matching the generated models' distance), a per-coordinate Gaussian fitted "
        f"to the zoo, `{average}` (averages of {members} random originals), the average of all "
        "originals, random interpolations of two originals. Selection controls: `selected_top1` / "
        "`selected_<q>pct`, the best originals by validation accuracy (exact copies; their "
        f"similarity leaves out their own original), `{selected_average}` (the average of the "
        f"{members} best) and `selected_noise_<s>` (noise around the best by validation: a second "
        "frontier).",
        _table(header, rows),
        f"![memorization]({MEMORIZATION_PLOT})",
        f"![projection]({PROJECTION_PLOT})",
    ]


def _stage_times(timings: dict[str, float]) -> list[tuple[str, float]]:
    """Stage and phase times, the collection runs summed into one row."""
    runs = [seconds for key, seconds in timings.items() if key.startswith(RUN_KEY_PREFIX)]
    rows = [
        (key, seconds)
        for key, seconds in timings.items()
        if not key.startswith(RUN_KEY_PREFIX) and key != RECALIBRATION_KEY
    ]
    return rows + ([(f"collect runs ({len(runs)}, summed)", sum(runs))] if runs else [])


def _interval(values: list[float]) -> str:
    return f"[{values[0]:.2f}, {values[1]:.2f}]"


def _keep_best_section(picked: dict) -> list[str]:
    """Generate N and keep the best by validation, against train N and keep the best by
    validation."""
    percent = _percent(picked["confidence"])
    header = [
        "pool",
        "N",
        "mean test",
        f"{percent} interval",
        "kept: validation",
        "kept: test",
        f"{percent} interval",
    ]
    rows = []
    for pool, label in (
        ("trained", "train N (each run's last checkpoint)"),
        ("generated", "generate N"),
    ):
        p = picked[pool]
        rows.append(
            [
                label,
                str(picked["n"]),
                f"{p['mean']:.2f}",
                _interval(p["mean_interval"]),
                f"{p['kept_val']:.2f}",
                f"{p['kept_test']:.2f}",
                _interval(p["kept_test_interval"]),
            ]
        )
    low, high = picked["margin_interval"]
    return [
        "## Picking a model as a user would",
        f"Keep the best of N = {picked['n']} by validation accuracy, then read its test accuracy "
        "(intervals: a paired bootstrap over test samples and over the N models drawn).",
        _table(header, rows),
        f"Kept generated minus kept trained: {picked['margin']:+.2f} points, {percent} interval "
        f"[{low:+.2f}, {high:+.2f}].",
    ]


def _cost_section(cost: dict) -> list[str]:
    """Seconds per SGD-trained model against seconds per generated model."""
    rows = [
        [
            "SGD: one independent run (its base training and its checkpoints)",
            _number(cost["sgd_per_run_s"]),
        ],
        ["SGD: one checkpoint of the zoo", _number(cost["sgd_per_checkpoint_s"])],
        [
            f"generated, amortised (generator training {cost['generator_train_s']:.1f} s + "
            f"sampling {cost['generate_s']:.1f} s, over the models, + recalibration)",
            _number(cost["generated_amortised_s"]),
        ],
        [
            "generated, marginal (sampling + recalibration "
            f"{_number(cost['recalibrate_per_model_s'])} s)",
            _number(cost["generated_marginal_s"]),
        ],
    ]
    return [
        "## What a model costs (seconds, this machine)",
        _table(["model", "seconds each"], rows),
    ]
