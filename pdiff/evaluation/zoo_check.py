"""Can this run's zoo and test set tell a generator from a copy? The check a report opens with.

A zoo whose originals all score alike, and err on the same test images, leaves nothing to tell
apart: copies, noise around the originals and new models all score the same, and every family of the
verdict ties by construction (the zoo Zeng et al. describe: one trajectory at a small learning
rate). A test set too small for the originals' spread does the same. The rule (`discriminates`): the
originals' test-accuracy spread (std) is larger than the smallest margin this test set resolves, and
their errors are not one set. Both sides are properties of the zoo and the test set alone: the same
zoo and test set get the same answer for every generator.
"""

from __future__ import annotations

import torch

from pdiff.evaluation.baseline_populations import FRONTIERS
from pdiff.evaluation.intervals import percentile_interval
from pdiff.evaluation.verdict import envelope_at, noise_frontier

SAME_ERRORS_IOU = (
    0.99  # originals whose misclassified sets overlap this much are one model for the test set
)


def zoo_check(report: dict, resampled: dict[str, torch.Tensor], noise_scales: list[float]) -> dict:
    """`zoo_check` of report.json: accuracy_std and resolution in points, error_iou, discriminates.

    resolution is half the width of the paired-bootstrap interval (over this test set's samples and
    the populations' models, `resampled`) of the originals' margin over the noise frontier at the
    originals' own similarity: the smallest margin this test set tells from 0 for models like the
    zoo's. The frontier is that of the configured scales (evaluate.baselines.noise_scales) only: the
    matched scale and the extensions follow the generated models, and so would the resolution.
    """
    table = report["memorization"]
    configured = {f"{FRONTIERS['noise']}{scale:g}" for scale in noise_scales}
    frontier = [point for point in noise_frontier(table) if point[2] in configured]
    at, _ = envelope_at(
        [similarity for similarity, _, _ in frontier],
        torch.stack([resampled[name] for _, _, name in frontier]),
        table["originals"]["max_iou_mean"],
    )
    low, high = percentile_interval(resampled["originals"] - at, report["verdict"]["confidence"])
    resolution = (high - low) / 2
    accuracy_std = float(report["original"]["std"])
    error_iou = table["originals"]["pairwise_iou_within"]
    same_errors = error_iou is not None and error_iou >= SAME_ERRORS_IOU
    return {
        "accuracy_std": round(accuracy_std, 4),
        "error_iou": None if error_iou is None else round(error_iou, 4),
        "resolution": round(resolution, 4),
        "discriminates": accuracy_std > resolution and not same_errors,
    }


def zoo_sentence(check: dict, n_test: int) -> str | None:
    """The plain sentence report.md opens with when the zoo cannot discriminate (None when it can)."""
    if check["discriminates"]:
        return None
    iou = check["error_iou"]
    errors = (
        f", and they misclassify the same test images (error IoU {iou:.2f})"
        if iou is not None
        else ""
    )
    return (
        f"**This zoo cannot tell a generator from a copy.** Its originals' test accuracies spread by "
        f"{check['accuracy_std']:.3f} points (std), while this test set of {n_test:,} samples resolves margins of "
        f"{check['resolution']:.2f} points{errors}: every family below can only tie. A zoo with spread comes "
        "from a larger `task.collect.lr` or more `task.collect.runs`; a larger test set resolves smaller margins."
    )


def zoo_word(check: dict) -> str:
    """What the one-line summary says of the zoo."""
    return (
        "zoo discriminates"
        if check["discriminates"]
        else "ZOO CANNOT DISCRIMINATE (report.md says why)"
    )
