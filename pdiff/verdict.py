"""The computed verdict: does the generated population trade accuracy for similarity better than each baseline?

Similarity is a population's mean max IoU of misclassified test samples with the originals (Zeng et al. 2025).
Against the noise family (originals + Gaussian noise at many scales) the question is whether the generated
models lie above the frontier: the best accuracy noise reaches at the generated similarity or below.
Against a point baseline: more accurate at no greater similarity, or less similar at no lower accuracy.
"""

from __future__ import annotations

from pdiff.memorization import NOISE_PREFIX, POINT_BASELINES


def noise_frontier(table: dict) -> list[tuple[float, float, str]]:
    """(similarity, accuracy, population) of every noise population, by increasing similarity."""
    return sorted((row["max_iou_mean"], row["acc_mean"], name) for name, row in table.items()
                  if name.startswith(NOISE_PREFIX) and isinstance(row, dict))


def frontier_envelope(frontier: list[tuple[float, float, str]]) -> list[tuple[float, float]]:
    """The best accuracy noise reaches at each similarity or below (a noise level that is both less similar and
    more accurate than another dominates it): the non-decreasing upper envelope of the frontier's points."""
    envelope, best = [], -float("inf")
    for similarity, accuracy, _ in frontier:
        best = max(best, accuracy)
        envelope.append((similarity, best))
    return envelope


def frontier_accuracy(envelope: list[tuple[float, float]], similarity: float) -> tuple[float, bool]:
    """The envelope's accuracy at `similarity` (linear between neighbouring points), and whether the end of the
    curve had to stand in for it (the similarity is outside the range the noise scales reach)."""
    if similarity <= envelope[0][0]:
        return envelope[0][1], similarity < envelope[0][0]
    if similarity >= envelope[-1][0]:
        return envelope[-1][1], similarity > envelope[-1][0]
    for (s0, a0), (s1, a1) in zip(envelope, envelope[1:]):
        if s0 <= similarity <= s1:
            return (a1 if s1 == s0 else a0 + (a1 - a0) * (similarity - s0) / (s1 - s0)), False
    raise AssertionError("unreachable: the similarity lies within the envelope")


def compute_verdict(table: dict) -> dict:
    """{baseline family: {beats, acc_margin (points), similarity_margin, ...}}, the novel fraction, beats_all."""
    generated = table["generated"]
    acc, similarity = generated["acc_mean"], generated["max_iou_mean"]
    frontier = noise_frontier(table)
    at, outside = frontier_accuracy(frontier_envelope(frontier), similarity)
    verdict = {"noise": {"beats": acc > at, "acc_margin": round(acc - at, 4), "frontier_acc": round(at, 4),
                         "similarity": similarity, "outside_frontier": outside,
                         "scales": [name for _, _, name in frontier]}}
    for name in POINT_BASELINES:
        row = table[name]
        acc_margin, similarity_margin = acc - row["acc_mean"], row["max_iou_mean"] - similarity
        verdict[name] = {"beats": (acc_margin > 0 and similarity_margin >= 0) or (similarity_margin > 0 and
                                                                                   acc_margin >= 0),
                         "acc_margin": round(acc_margin, 4), "similarity_margin": round(similarity_margin, 4),
                         "acc": row["acc_mean"], "similarity": row["max_iou_mean"]}
    families = ("noise", *POINT_BASELINES)
    verdict["novel_fraction"] = generated["novel_fraction"]
    verdict["beats_all"] = all(verdict[family]["beats"] for family in families)
    return verdict


def verdict_sentences(verdict: dict, table: dict) -> list[str]:
    """One plain sentence per baseline family, then the novelty figure."""
    generated = table["generated"]
    head = f"Generated ({generated['acc_mean']:.2f}% at similarity {generated['max_iou_mean']:.3f})"
    noise = verdict["noise"]
    sentences = [f"{head} {'beats' if noise['beats'] else 'does not beat'} the noise frontier: at its similarity, "
                 f"originals plus noise reach {noise['frontier_acc']:.2f}% (margin {noise['acc_margin']:+.2f} "
                 f"points{', beyond the range of the noise scales' if noise['outside_frontier'] else ''})."]
    for name in POINT_BASELINES:
        entry = verdict[name]
        sentences.append(f"{head} {'beats' if entry['beats'] else 'does not beat'} {name} ({entry['acc']:.2f}% at "
                         f"{entry['similarity']:.3f}): accuracy margin {entry['acc_margin']:+.2f} points, "
                         f"similarity margin {entry['similarity_margin']:+.3f}.")
    novel = round(verdict["novel_fraction"] * generated["n"])
    sentences.append(f"{novel} of {generated['n']} generated models ({100 * verdict['novel_fraction']:.0f}%) are "
                     f"further from every original than the originals' median nearest-neighbour distance "
                     f"({table['originals_nn_l2_median']:.3g} in z-scores); originals among themselves reach "
                     f"similarity {table['originals']['max_iou_mean']:.3f}.")
    return sentences
