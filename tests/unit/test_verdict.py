import pytest

from pdiff.verdict import compute_verdict, frontier_accuracy, frontier_envelope, noise_frontier, verdict_sentences


def _row(acc: float, similarity: float, n: int = 10) -> dict:
    return {"n": n, "acc_mean": acc, "max_iou_mean": similarity, "novel_fraction": 0.5}


def _table(generated: tuple[float, float], **points: tuple[float, float]) -> dict:
    table = {"originals_nn_l2_median": 1.0, "originals": _row(80.0, 0.95), "generated": _row(*generated),
             "noise_0.01": _row(80.0, 0.98), "noise_0.1": _row(78.0, 0.90), "noise_1": _row(60.0, 0.50)}
    for name in ("gaussian", "average16", "average", "interpolation"):
        table[name] = _row(*points.get(name, (70.0, 0.99)))
    return table


def test_frontier_interpolates_between_scales_and_flags_the_ends():
    envelope = frontier_envelope(noise_frontier(_table((0.0, 0.0))))
    assert frontier_accuracy(envelope, 0.70) == (pytest.approx(69.0), False)  # halfway from 0.50 to 0.90
    assert frontier_accuracy(envelope, 0.99) == (80.0, True) and frontier_accuracy(envelope, 0.2) == (60.0, True)


def test_envelope_takes_the_best_noise_at_or_below_a_similarity():
    table = _table((0.0, 0.0))
    table["noise_0.3"] = _row(79.0, 0.60)  # less similar and more accurate than noise_0.1: it dominates it
    envelope = frontier_envelope(noise_frontier(table))
    assert [acc for _, acc in envelope] == [60.0, 79.0, 79.0, 80.0]
    assert frontier_accuracy(envelope, 0.90)[0] == 79.0


def test_verdict_against_the_frontier_and_each_point_baseline():
    table = _table((79.0, 0.90), gaussian=(78.5, 0.90), average16=(79.5, 0.85), average=(79.0, 0.95),
                   interpolation=(79.0, 0.90))
    verdict = compute_verdict(table)
    assert verdict["noise"]["beats"] and verdict["noise"]["acc_margin"] == pytest.approx(1.0)
    assert verdict["gaussian"]["beats"] and verdict["gaussian"]["acc_margin"] == pytest.approx(0.5)
    assert not verdict["average16"]["beats"]  # more accurate and less similar than generated
    assert verdict["average"]["beats"] and verdict["average"]["acc_margin"] == 0  # as accurate, less similar
    assert not verdict["interpolation"]["beats"]  # a tie is not a win
    assert not verdict["beats_all"] and verdict["novel_fraction"] == 0.5
    below = compute_verdict(_table((77.0, 0.90)))
    assert not below["noise"]["beats"] and below["noise"]["acc_margin"] == pytest.approx(-1.0)
    sentences = verdict_sentences(verdict, table)
    assert len(sentences) == 6 and "beats the noise frontier" in sentences[0] and "does not beat average16" in \
        sentences[2]
