"""The run's report: report.json (fixed keys), report.md and a PNG of both accuracy distributions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from pdiff import atomic  # noqa: E402
from pdiff.config import LoggerName, Stage  # noqa: E402
from pdiff.evaluation.baseline_populations import (  # noqa: E402
    FRONTIERS,
    average_labels,
    averaged_members,
)
from pdiff.evaluation.costs import RECALIBRATION_KEY, RUN_KEY_PREFIX  # noqa: E402
from pdiff.evaluation.seed_table import SWEEP_TABLE, sweep_group, sweep_table, write_sweep_summary  # noqa: E402
from pdiff.evaluation.verdict import family_entries, frontier_envelope, noise_frontier, verdict_line  # noqa: E402
from pdiff.evaluation.zoo_check import zoo_sentence, zoo_word  # noqa: E402
from pdiff.heldout.report import task_summary_line  # noqa: E402
from pdiff.tracking import Tracker  # noqa: E402

ACCURACY_PLOT = "accuracy.png"
MEMORIZATION_PLOT = "memorization.png"
PROJECTION_PLOT = "projection.png"
CURVES_PLOT = "training_curves.png"
FRONTIER_PLOT = "frontier.png"


def summarize(accuracy: torch.Tensor) -> dict:
    """n, best, mean, median, min, std of accuracies in percent."""
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
        "original": summarize(original),
        "generated": summarize(generated),
        "timings_s": {key: round(v, 3) for key, v in timings.items()},
    }


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    try:
        atomic.write_file(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def plot_accuracies(
    path: Path, original: torch.Tensor, generated: torch.Tensor, n_test: int
) -> None:
    """Histogram (one bin per test-set error count) and sorted accuracies of originals and generated
    models."""
    step = 100.0 / n_test
    low = float(torch.cat([original, generated]).min()) - step
    high = float(torch.cat([original, generated]).max()) + step
    bins = torch.arange(low - step / 2, high + step, step).tolist()
    fig, (hist, ranks) = plt.subplots(1, 2, figsize=(11, 4))
    for values, label, colour in (
        (original, "original (SGD)", "tab:blue"),
        (generated, "generated (p-diff)", "tab:orange"),
    ):
        hist.hist(
            values.tolist(), bins=bins, alpha=0.55, label=f"{label}, n={len(values)}", color=colour
        )
        ranks.plot(sorted(values.tolist(), reverse=True), label=label, color=colour)
    hist.set_xlabel("test accuracy (%)")
    hist.set_ylabel("models")
    hist.set_title(f"Accuracy distribution (one bin = one test image of {n_test})")
    hist.legend(loc="upper left")
    ranks.set_xlabel("model rank")
    ranks.set_ylabel("test accuracy (%)")
    ranks.set_title("Models sorted by accuracy")
    ranks.legend()
    _save(fig, path)


def plot_memorization(
    path: Path, accuracies: dict[str, torch.Tensor], per_model: dict[str, torch.Tensor]
) -> None:
    """Accuracy of every population (box plots) and accuracy vs. max error-IoU with the nearest
    original."""
    names = list(accuracies)
    fig, (boxes, scatter) = plt.subplots(1, 2, figsize=(13, 4.8))
    boxes.boxplot([accuracies[name].tolist() for name in names], showfliers=True)
    boxes.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    boxes.set_ylabel("test accuracy (%)")
    boxes.set_title("Accuracy: originals, generated, baselines")
    for name in names:
        if f"max_iou:{name}" in per_model:
            style = (
                {"s": 30, "marker": "*", "zorder": 3}
                if name == "generated"
                else {"s": 10, "alpha": 0.5}
            )
            scatter.scatter(
                per_model[f"max_iou:{name}"].tolist(),
                accuracies[name].tolist(),
                label=name,
                **style,
            )
    scatter.set_xlabel("max IoU of misclassified test samples with any original (1 = same errors)")
    scatter.set_ylabel("test accuracy (%)")
    scatter.set_title("Accuracy vs. similarity to the nearest original")
    scatter.legend(fontsize=8)
    _save(fig, path)


def plot_projection(path: Path, vectors: dict[str, torch.Tensor]) -> None:
    """Originals and generated vectors (normalised space) in 2-D: PCA of the originals, and t-SNE."""
    from sklearn.manifold import TSNE

    originals = vectors["originals"].double()
    mean = originals.mean(0)
    _, _, components = torch.linalg.svd(originals - mean, full_matrices=False)
    everything = torch.cat(list(vectors.values())).double()
    embedded = TSNE(
        n_components=2, perplexity=min(30.0, (len(everything) - 1) / 3), init="pca", random_state=0
    ).fit_transform(everything.numpy())
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    start = 0
    for name, values in vectors.items():
        pca = (values.double() - mean) @ components[:2].T
        axes[0].scatter(pca[:, 0].tolist(), pca[:, 1].tolist(), s=12, alpha=0.6, label=name)
        axes[1].scatter(
            embedded[start : start + len(values), 0],
            embedded[start : start + len(values), 1],
            s=12,
            alpha=0.6,
            label=name,
        )
        start += len(values)
    for axis, title in zip(axes, ("PCA (axes of the originals)", "t-SNE")):
        axis.set_title(f"Parameter vectors, {title}")
        axis.set_xlabel("component 1")
        axis.set_ylabel("component 2")
        axis.legend()
    _save(fig, path)


NO_ROWS = "no rows logged"


def plot_training_curves(
    path: Path, metrics_file: Path, phases: dict[str, str]
) -> dict[str, tuple[list, list]]:
    """Loss against step for each training phase of the design, from metrics.jsonl: one panel per
    phase, in order.

    `phases` maps a phase's metric prefix (the `name` pdiff.training.fit.fit logs `{name}/loss`,
    `{name}/step` under) to its panel title; a phase without rows gets a panel saying so. Returns
    {title: (steps, losses)} as drawn, read back from the figure's lines.
    """
    curves: dict[str, tuple[list, list]] = {name: ([], []) for name in phases}
    lines = metrics_file.read_text().splitlines() if metrics_file.is_file() else []
    for line in lines:
        record = json.loads(line)
        for name, (steps, losses) in curves.items():
            if f"{name}/loss" in record and f"{name}/step" in record:
                steps.append(record[f"{name}/step"])
                losses.append(record[f"{name}/loss"])
    fig, axes = plt.subplots(
        1, max(1, len(phases)), figsize=(5.5 * max(1, len(phases)), 4), squeeze=False
    )
    if not phases:  # a design that trains nothing
        axes[0, 0].text(
            0.5, 0.5, "the design declares no training phases", ha="center", va="center"
        )
    drawn = {}
    for axis, (name, (steps, losses)) in zip(axes[0], curves.items()):
        axis.set_title(phases[name])
        axis.set_xlabel("step")
        axis.set_ylabel(f"training loss ({name}/loss)")
        if steps:
            axis.plot(steps, losses)
            axis.set_yscale("log" if min(losses) > 0 else "linear")
        else:
            axis.text(
                0.5,
                0.5,
                f"{NO_ROWS} ({name}/loss)",
                ha="center",
                va="center",
                transform=axis.transAxes,
            )
        drawn[phases[name]] = tuple(
            [float(v) for v in data]
            for data in (axis.lines[0].get_data() if axis.lines else ([], []))
        )
    _save(fig, path)
    return drawn


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot_frontier(
    path: Path,
    report: dict,
    accuracies: dict[str, torch.Tensor],
    per_model: dict[str, torch.Tensor],
) -> None:
    """The critique's figure for this run: both noise frontiers (accuracy vs. similarity to the
    nearest original: noise around all originals, and around the best by validation) as curves,
    every point baseline as its mean with one-std bars, and each generated model as a dot."""
    table, verdict = report["memorization"], report["verdict"]
    fig, axis = plt.subplots(figsize=(12, 5.5))
    if "max_iou:generated" in per_model:
        axis.scatter(
            per_model["max_iou:generated"].tolist(),
            accuracies["generated"].tolist(),
            s=8,
            alpha=0.3,
            color="tab:orange",
            label="generated (each model)",
        )
    for (family, prefix), colour in zip(FRONTIERS.items(), ("grey", "black")):
        frontier = noise_frontier(table, prefix)
        envelope = frontier_envelope(frontier)
        axis.plot(
            [s for s, _, _ in frontier],
            [a for _, a, _ in frontier],
            "o",
            color=colour,
            markersize=4,
            alpha=0.6,
            label=f"{family}: one point per scale",
        )
        axis.plot(
            [s for s, _ in envelope],
            [a for _, a in envelope],
            "-",
            color=colour,
            label=f"{family} frontier (best accuracy at this similarity or below)",
        )
        for similarity, acc, name in frontier:
            axis.annotate(
                name.removeprefix(prefix),
                (similarity, acc),
                fontsize=6,
                xytext=(3, -9),
                textcoords="offset points",
                color=colour,
            )
    points = (
        "originals",
        "generated",
        *(family for family, _ in family_entries(verdict) if family not in FRONTIERS),
    )
    colours = plt.get_cmap("tab20").colors
    for index, name in enumerate(points):
        row = table[name]
        axis.errorbar(
            row["max_iou_mean"],
            row["acc_mean"],
            xerr=row["max_iou_std"],
            yerr=row["acc_std"],
            fmt="*" if name == "generated" else "o",
            markersize=12 if name == "generated" else 6,
            color="tab:orange" if name == "generated" else colours[index % len(colours)],
            capsize=3,
            label=f"{name} (mean +- std)",
            zorder=3,
        )
    axis.set_xlabel("similarity: max IoU of misclassified test samples with any original")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("Accuracy vs. similarity to the zoo: generated models against the baselines")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def render_markdown(report: dict, verdict_lines: list[str]) -> str:
    rows = ["| models | n | best | mean | median | min | std |", "|---|---|---|---|---|---|---|"]
    for key in ("original", "generated"):
        s = report[key]
        rows.append(
            f"| {key} | {s['n']} | {s['best']:.2f} | {s['mean']:.2f} | {s['median']:.2f} | {s['min']:.2f} "
            f"| {s['std']:.3f} |"
        )
    delta = {m: report["generated"][m] - report["original"][m] for m in ("best", "mean", "min")}
    validation = report["validation"]
    verdict = report["verdict"]
    percent = f"{100 * verdict['confidence']:g}%"
    verdict_rows = [
        f"| family | status | accuracy margin (points) | {percent} interval | baseline similarity |",
        "|---|---|---|---|---|",
    ]
    for family, entry in family_entries(verdict):
        similarity = entry.get("similarity") if "similarity_margin" in entry else None
        verdict_rows.append(
            f"| {family} | **{entry['status']}** | {entry['acc_margin']:+.2f} | [{entry['low']:+.2f}, "
            f"{entry['high']:+.2f}] | {_number(similarity)} |"
        )
    memo = report["memorization"]
    members = averaged_members(memo)
    average, selected_average = average_labels(members)
    memo_rows = [
        f"| models | n | acc mean | {percent} interval | acc best | NN L2 mean | NN cos mean | max IoU mean "
        "| IoU within | novel |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in memo.items():
        if isinstance(f, dict):
            low, high = f["acc_interval"]
            memo_rows.append(
                f"| {name} | {f['n']} | {f['acc_mean']:.2f} | [{low:.2f}, {high:.2f}] "
                f"| {f['acc_best']:.2f} "
                f"| {f['nn_l2_mean']:.4g} | {f['nn_cos_mean']:.3g} | {f['max_iou_mean']:.3f} "
                f"| {_number(f['pairwise_iou_within'])} | {100 * f['novel_fraction']:.0f}% |"
            )
    timing_rows = "\n".join(
        f"| {stage} | {seconds:.1f} |" for stage, seconds in _stage_times(report["timings_s"])
    )
    warning, ignored = (
        zoo_sentence(report["zoo_check"], report["n_test"]),
        report.get("ignored_overrides", []),
    )
    return (
        f"# pdiff report: {report['task']}\n\n"
        + (f"{warning}\n\n" if warning else "")
        + (
            f"Overrides this run never read (ignored): {'; '.join(f'`{line}`' for line in ignored)}.\n\n"
            if ignored
            else ""
        )
        + f"K = {report['k']} SGD checkpoints of {report['param_count']:,} parameters; accuracy in percent on "
        f"{report['n_test']:,} test samples (read only by this stage).\n\n"
        + "\n".join(rows)
        + f"\n\nGenerated minus original: best {delta['best']:+.2f}, mean {delta['mean']:+.2f}, "
        f"min {delta['min']:+.2f} points. On validation (what the zoo records and designs may use): original "
        f"mean {validation['original']['mean']:.2f}, generated mean {validation['generated']['mean']:.2f}.\n\n"
        f"![accuracy distributions]({ACCURACY_PLOT})\n\n"
        "## New models or copies?\n\n"
        f"Beats every family: **{'yes' if verdict['beats_all'] else 'no'}**. A family is beaten only when the "
        f"{percent} interval of the margin (a paired bootstrap over test samples and over each population's "
        "models) lies above 0, and lost to when it lies below 0; otherwise it is a tie.\n\n"
        + "\n".join(verdict_rows)
        + "\n\n"
        + "".join(f"- {line}\n" for line in verdict_lines)
        + "\n"
        f"![frontier]({FRONTIER_PLOT})\n\n"
        "Distances are in per-tensor z-scores of the zoo; NN = nearest original (for originals: nearest other "
        "original); IoU compares the sets of misclassified test images; 'novel' = further from every original "
        "than the originals' median nearest-neighbour distance. Baselines as in Zeng et al. (2025): originals "
        "plus Gaussian noise (the frontier's scales, and the scale matching the generated models' distance), a "
        f"per-coordinate Gaussian fitted to the zoo, `{average}` (averages of {members} random originals), the "
        "average of all originals, random interpolations of two originals. Selection controls: `selected_top1` / "
        "`selected_<q>pct`, the best originals by validation accuracy (exact copies; their similarity leaves "
        "out their own original), "
        f"`{selected_average}` (the average of the {members} best) and `selected_noise_<s>` (noise around the "
        "best by validation: a second frontier).\n\n"
        + "\n".join(memo_rows)
        + f"\n\n![memorization]({MEMORIZATION_PLOT})\n\n![projection]({PROJECTION_PLOT})\n\n"
        + _keep_best_section(report["keep_best"])
        + _cost_section(report["cost"])
        + f"## Training\n\n![training curves]({CURVES_PLOT})\n\n"
        f"## Time per stage\n\n| stage | seconds |\n|---|---|\n{timing_rows}\n"
    )


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


def _keep_best_section(picked: dict) -> str:
    """Generate N and keep the best by validation, against train N and keep the best by validation."""
    percent = f"{100 * picked['confidence']:g}%"
    rows = [
        f"| pool | N | mean test | {percent} interval | kept: validation | kept: test | {percent} interval |",
        "|---|---|---|---|---|---|---|",
    ]
    for pool, label in (
        ("trained", "train N (each run's last checkpoint)"),
        ("generated", "generate N"),
    ):
        p = picked[pool]
        rows.append(
            f"| {label} | {picked['n']} | {p['mean']:.2f} | {_interval(p['mean_interval'])} | "
            f"{p['kept_val']:.2f} | {p['kept_test']:.2f} | {_interval(p['kept_test_interval'])} |"
        )
    return (
        "## Picking a model as a user would\n\n"
        f"Keep the best of N = {picked['n']} by validation accuracy, then read its test accuracy (intervals: "
        "a paired bootstrap over test samples and over the N models drawn).\n\n"
        + "\n".join(rows)
        + f"\n\nKept generated minus kept trained: {picked['margin']:+.2f} points, {percent} interval "
        f"[{picked['margin_interval'][0]:+.2f}, {picked['margin_interval'][1]:+.2f}].\n\n"
    )


def _cost_section(cost: dict) -> str:
    """Seconds per SGD-trained model against seconds per generated model."""

    def seconds(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return (
        "## What a model costs (seconds, this machine)\n\n| model | seconds each |\n|---|---|\n"
        f"| SGD: one independent run (its base training and its checkpoints) | {seconds(cost['sgd_per_run_s'])} |\n"
        f"| SGD: one checkpoint of the zoo | {seconds(cost['sgd_per_checkpoint_s'])} |\n"
        f"| generated, amortised (generator training {cost['generator_train_s']:.1f} s + sampling "
        f"{cost['generate_s']:.1f} s, over the models, + recalibration) | "
        f"{seconds(cost['generated_amortised_s'])} |\n"
        f"| generated, marginal (sampling + recalibration {seconds(cost['recalibrate_per_model_s'])} s) | "
        f"{seconds(cost['generated_marginal_s'])} |\n\n"
    )


def write_report(
    directory: Path,
    report: dict,
    accuracies: dict[str, torch.Tensor],
    per_model: dict[str, torch.Tensor],
    n_test: int,
    normalized_vectors: dict[str, torch.Tensor],
    verdict_lines: list[str],
    *,
    phases: dict[str, str],
) -> None:
    """report.json, report.md and its plots in `directory`; `phases` ({metric prefix: title}, the
    design's training phases) chooses the training-curve panels."""
    plot_accuracies(
        directory / ACCURACY_PLOT, accuracies["originals"], accuracies["generated"], n_test
    )
    plot_memorization(directory / MEMORIZATION_PLOT, accuracies, per_model)
    plot_frontier(directory / FRONTIER_PLOT, report, accuracies, per_model)
    plot_projection(directory / PROJECTION_PLOT, normalized_vectors)
    plot_training_curves(directory / CURVES_PLOT, directory / "metrics.jsonl", phases)
    atomic.write_json(directory / "report.json", report)
    atomic.write_text(directory / "report.md", render_markdown(report, verdict_lines))


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


def summary_line(stage: str, output_dir: Path, report: dict | None, seconds: float) -> str:
    """The one line a run ends with: the report's accuracies, or the stage that ran."""
    if report is None:
        return f"pdiff: stage={stage} done in {seconds:.1f} s -> {output_dir}"
    if "family" in report:
        return task_summary_line(report, seconds, output_dir)
    o, g, verdict = report["original"], report["generated"], report["verdict"]
    return (
        f"pdiff: {report['task']} K={report['k']} D={report['param_count']} | original best/mean/min "
        f"{o['best']:.2f}/{o['mean']:.2f}/{o['min']:.2f} | generated best/mean/min {g['best']:.2f}/{g['mean']:.2f}/"
        f"{g['min']:.2f} (n={g['n']}) | verdict, margin [{100 * verdict['confidence']:g}% interval]: "
        f"{verdict_line(verdict)} | {zoo_word(report['zoo_check'])} | {seconds:.1f} s | {output_dir / 'report.md'}"
    )


def own_report(output_dir: Path, stage: Stage) -> dict | None:
    """The report a run of `stage` into `output_dir` ends with: its report.json when the run
    evaluates."""
    path = output_dir / "report.json"
    return (
        json.loads(path.read_text())
        if stage in (Stage.all, Stage.evaluate) and path.is_file()
        else None
    )


class ReportIndex(Callback):
    """Hydra callback: after a multirun, print where each sweep point's report is, then the mean and
    std of every figure over the points (sweep.md), logged to the sweep's W&B group when
    logger=wandb. A multirun whose one folder is the sweep folder itself (`-m` with no override that
    names a point) ends with the run's own line."""

    def __init__(self) -> None:
        self.started = (
            time.perf_counter()
        )  # Hydra makes its callbacks just before the multirun starts

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if (
            config.hydra.job.override_dirname == ""
        ):  # it names the points' folders (hydra.sweep.subdir)
            stage, seconds = Stage(config.stage), time.perf_counter() - self.started
            print(summary_line(stage.value, sweep_dir, own_report(sweep_dir, stage), seconds))
            return
        reports = sorted(sweep_dir.glob("*/report.json"))
        print(f"pdiff: {len(reports)} reports under {sweep_dir}")
        for path in reports:
            report = json.loads(path.read_text())
            print(
                f"  {path.parent / 'report.md'}: generated best/mean {report['generated']['best']:.2f}/"
                f"{report['generated']['mean']:.2f}, original best/mean {report['original']['best']:.2f}/"
                f"{report['original']['mean']:.2f}"
            )
        if not reports:
            return
        markdown = write_sweep_summary(sweep_dir)
        points, rows = sweep_table(sweep_dir)
        print(markdown + f"pdiff: sweep table of {len(points)} runs -> {sweep_dir / SWEEP_TABLE}")
        if LoggerName(config.logger.name) is LoggerName.wandb:
            logger = OmegaConf.merge(
                config.logger,
                {
                    "group": config.logger.group or sweep_group(sweep_dir),
                    "run_name": "sweep-summary",
                },
            )
            tracker = Tracker(
                sweep_dir,
                logger,
                {
                    "task": {"name": str(config.task.name)},
                    "generator": {"design": str(config.generator.design)},
                },
            )
            tracker.log_artifacts({}, {"sweep/table": [["figure", "mean", "std", *points], *rows]})
            tracker.close()
