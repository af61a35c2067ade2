"""The one-task report's five figures (accuracies, memorisation, frontier, projection, training
curves) and their file names, which report.md links."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pdiff import atomic  # noqa: E402
from pdiff.evaluation.baseline_populations import FRONTIERS  # noqa: E402
from pdiff.evaluation.similarity import COLUMN_BLOCK  # noqa: E402
from pdiff.evaluation.verdict import family_entries, frontier_envelope, noise_frontier  # noqa: E402
from pdiff.zoo.params import ParamNormalizer  # noqa: E402

ACCURACY_PLOT = "accuracy.png"
MEMORIZATION_PLOT = "memorization.png"
PROJECTION_PLOT = "projection.png"
CURVES_PLOT = "training_curves.png"
FRONTIER_PLOT = "frontier.png"


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


def plot_projection(
    path: Path, vectors: dict[str, torch.Tensor], normalizer: ParamNormalizer | None = None
) -> None:
    """Originals and generated vectors (normalised by `normalizer`, if given) in 2-D: PCA of the
    originals, and t-SNE of their exact distances. Both come from the Gram matrix of all vectors,
    summed over column blocks: no [N, D] copy is made whatever D."""
    from sklearn.manifold import TSNE

    counts = [len(values) for values in vectors.values()]
    gram = centred_gram(list(vectors.values()), normalizer)
    eigenvalues, eigenvectors = torch.linalg.eigh(gram[: counts[0], : counts[0]])
    top = eigenvalues.argsort(descending=True)[:2]
    pca = gram[:, : counts[0]] @ eigenvectors[:, top] / eigenvalues[top].clamp_min(1e-12).sqrt()
    squared = gram.diagonal()[:, None] + gram.diagonal()[None] - 2 * gram
    embedded = TSNE(
        n_components=2,
        perplexity=min(30.0, (len(gram) - 1) / 3),
        metric="precomputed",
        init="random",
        random_state=0,
    ).fit_transform(squared.clamp_min(0).sqrt().numpy())
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    start = 0
    for name, count in zip(vectors, counts):
        rows = slice(start, start + count)
        axes[0].scatter(pca[rows, 0].tolist(), pca[rows, 1].tolist(), s=12, alpha=0.6, label=name)
        axes[1].scatter(embedded[rows, 0], embedded[rows, 1], s=12, alpha=0.6, label=name)
        start += count
    for axis, title in zip(axes, ("PCA (axes of the originals)", "t-SNE")):
        axis.set_title(f"Parameter vectors, {title}")
        axis.set_xlabel("component 1")
        axis.set_ylabel("component 2")
        axis.legend()
    _save(fig, path)


def centred_gram(parts: list[torch.Tensor], normalizer: ParamNormalizer | None) -> torch.Tensor:
    """[N, N] float64 inner products of the rows of every part (normalised), centred on the mean
    of the first part's."""
    count = sum(len(part) for part in parts)
    gram = torch.zeros(count, count, dtype=torch.float64)
    for start in range(0, parts[0].shape[1], COLUMN_BLOCK):
        columns = slice(start, start + COLUMN_BLOCK)
        block = torch.cat([part[:, columns] for part in parts]).double()
        if normalizer is not None:
            block = (block - normalizer.mean[columns].double()) / normalizer.std[columns].double()
        block = block - block[: len(parts[0])].mean(0)
        gram += block @ block.T
    return gram


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
