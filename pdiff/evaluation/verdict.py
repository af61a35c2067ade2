"""The computed verdict: does the generated population trade accuracy for similarity better than
each baseline?

Similarity is a population's mean max IoU of misclassified test samples with the originals (Zeng et
al. 2025). Every accuracy margin has a paired-bootstrap interval (pdiff/evaluation/intervals.py),
and a family's status follows it: `beats` when the interval lies above 0, `loses` when it lies below
0, `ties` otherwise.

- A noise frontier (originals, or the best originals by validation, plus Gaussian noise at many
  scales): the margin is over the frontier's upper envelope at the generated similarity (the best
  accuracy noise reaches at that similarity or below, linear between scales). A similarity outside
  the scales' range is not a win: ties.
- A point baseline (one population): the margin is over its mean accuracy; its similarity margin is
  reported beside it. The selection controls (the best originals by validation, exact copies, and
  noise around them) are what a generator that only copies good checkpoints cannot beat.
"""

from __future__ import annotations

import torch

from pdiff.evaluation.baseline_populations import FRONTIERS
from pdiff.evaluation.intervals import percentile_interval

BEATS, TIES, LOSES = "beats", "ties", "loses"


def noise_frontier(table: dict, prefix: str = FRONTIERS["noise"]) -> list[tuple[float, float, str]]:
    """(similarity, accuracy, population) of every population of one noise frontier, by increasing
    similarity."""
    return sorted(
        (row["max_iou_mean"], row["acc_mean"], name)
        for name, row in table.items()
        if name.startswith(prefix) and isinstance(row, dict)
    )


def frontier_envelope(frontier: list[tuple[float, float, str]]) -> list[tuple[float, float]]:
    """The best accuracy noise reaches at each similarity or below (a noise level that is both less
    similar and more accurate than another dominates it): the non-decreasing upper envelope of the
    frontier's points."""
    envelope, best = [], -float("inf")
    for similarity, accuracy, _ in frontier:
        best = max(best, accuracy)
        envelope.append((similarity, best))
    return envelope


def envelope_at(
    similarities: list[float], accuracies: torch.Tensor, similarity: float
) -> tuple[torch.Tensor, bool]:
    """The envelope's accuracy at `similarity` for points at increasing `similarities` with
    accuracies [P, ...] (e.g. [P, B] resamples), and whether `similarity` lies outside their range
    (the nearest end stands in).

    Points of equal similarity count with the best of them.
    """
    envelope = accuracies.cummax(0).values
    sims = torch.tensor(similarities, dtype=torch.float64)

    def last_at_or_below(value: float) -> int:
        return (
            int(torch.searchsorted(sims, torch.tensor(value, dtype=torch.float64), right=True)) - 1
        )

    if similarity < similarities[0]:
        return envelope[last_at_or_below(similarities[0])], True
    low = last_at_or_below(similarity)
    if similarity > similarities[-1]:
        return envelope[-1], True
    if similarities[low] == similarity:
        return envelope[low], False
    high = last_at_or_below(similarities[low + 1])
    weight = (similarity - similarities[low]) / (similarities[low + 1] - similarities[low])
    return envelope[low] + weight * (envelope[high] - envelope[low]), False


def status_of(low: float, high: float) -> str:
    return BEATS if low > 0 else LOSES if high < 0 else TIES


def compute_verdict(
    table: dict,
    resampled: dict[str, torch.Tensor],
    point_families: tuple[str, ...],
    confidence: float,
) -> dict:
    """{family: {status, beats, acc_margin (points), low, high, similarity figures}},
    novel_fraction, beats_all.

    `resampled` holds every population's [B] bootstrap accuracies (the same resampled test samples
    for all).
    """
    generated = table["generated"]
    acc, similarity = generated["acc_mean"], generated["max_iou_mean"]
    verdict = {}
    for family, prefix in FRONTIERS.items():
        frontier = noise_frontier(table, prefix)
        sims, names = [s for s, _, _ in frontier], [name for _, _, name in frontier]
        at, outside = envelope_at(
            sims, torch.tensor([a for _, a, _ in frontier], dtype=torch.float64), similarity
        )
        resampled_at, _ = envelope_at(
            sims, torch.stack([resampled[name] for name in names]), similarity
        )
        low, high = percentile_interval(resampled["generated"] - resampled_at, confidence)
        status = TIES if outside else status_of(low, high)
        verdict[family] = {
            "status": status,
            "beats": status == BEATS,
            "acc_margin": round(acc - float(at), 4),
            "low": round(low, 4),
            "high": round(high, 4),
            "frontier_acc": round(float(at), 4),
            "similarity": similarity,
            "outside_frontier": outside,
            "scales": names,
        }
    for name in point_families:
        row = table[name]
        similarity_margin = row["max_iou_mean"] - similarity
        low, high = percentile_interval(resampled["generated"] - resampled[name], confidence)
        status = status_of(low, high)
        verdict[name] = {
            "status": status,
            "beats": status == BEATS,
            "acc_margin": round(acc - row["acc_mean"], 4),
            "low": round(low, 4),
            "high": round(high, 4),
            "similarity_margin": round(similarity_margin, 4),
            "acc": row["acc_mean"],
            "similarity": row["max_iou_mean"],
        }
    families = (*FRONTIERS, *point_families)
    verdict["families"] = list(families)
    verdict["confidence"] = confidence
    verdict["novel_fraction"] = generated["novel_fraction"]
    verdict["beats_all"] = all(verdict[family]["status"] == BEATS for family in families)
    return verdict


def family_entries(verdict: dict) -> list[tuple[str, dict]]:
    """(family, entry) in the verdict's order."""
    return [(family, verdict[family]) for family in verdict["families"]]


def interval_text(entry: dict) -> str:
    return f"{entry['acc_margin']:+.2f} [{entry['low']:+.2f}, {entry['high']:+.2f}]"


_VERBS = {BEATS: "beats", TIES: "ties with", LOSES: "loses to"}
_FRONTIER_NAMES = {
    "noise": "the noise frontier",
    "selected_noise": "the frontier of noise around the selected originals",
}


def verdict_sentences(verdict: dict, table: dict) -> list[str]:
    """One plain sentence per baseline family, then the novelty figure."""
    generated = table["generated"]
    head = f"Generated ({generated['acc_mean']:.2f}% at similarity {generated['max_iou_mean']:.3f})"
    percent = f"{100 * verdict['confidence']:g}%"
    sentences = []
    for family, entry in family_entries(verdict):
        margin = (
            f"accuracy margin {entry['acc_margin']:+.2f} points, {percent} interval [{entry['low']:+.2f}, "
            f"{entry['high']:+.2f}]"
        )
        if family in FRONTIERS:
            where = (
                " (outside the range of the noise scales: not a win)"
                if entry["outside_frontier"]
                else ""
            )
            sentences.append(
                f"{head} {_VERBS[entry['status']]} {_FRONTIER_NAMES[family]}: at its similarity, noise "
                f"reaches {entry['frontier_acc']:.2f}%; {margin}{where}."
            )
        else:
            sentences.append(
                f"{head} {_VERBS[entry['status']]} {family} ({entry['acc']:.2f}% at "
                f"{entry['similarity']:.3f}): {margin}, similarity margin "
                f"{entry['similarity_margin']:+.3f}."
            )
    novel = round(verdict["novel_fraction"] * generated["n"])
    sentences.append(
        f"{novel} of {generated['n']} generated models ({100 * verdict['novel_fraction']:.0f}%) are "
        f"further from every original than the originals' median nearest-neighbour distance "
        f"({table['originals_nn_l2_median']:.3g} in z-scores); originals among themselves reach "
        f"similarity {table['originals']['max_iou_mean']:.3f}."
    )
    return sentences


def verdict_line(verdict: dict) -> str:
    """Each family's status and margin interval, for the one-line summary."""
    return ", ".join(
        f"{family} {entry['status']} {interval_text(entry)}"
        for family, entry in family_entries(verdict)
    )
