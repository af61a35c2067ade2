import torch

from pdiff.memorization import (
    Population,
    baseline_populations,
    error_iou,
    matched_noise_scale,
    mean_pairwise_iou,
    memorization_normalizer,
    memorization_table,
    nearest_original,
)
from pdiff.params import select_parameters
from pdiff.tasknets import digits_cnn


def test_error_iou_matches_a_loop():
    torch.manual_seed(0)
    a, b = torch.rand(5, 40) < 0.3, torch.rand(4, 40) < 0.3
    b[0] = False
    a[0] = False
    iou = error_iou(a, b)
    for i in range(5):
        for j in range(4):
            inter, union = (a[i] & b[j]).sum(), (a[i] | b[j]).sum()
            expected = 1.0 if union == 0 else float(inter) / float(union)
            assert abs(float(iou[i, j]) - expected) < 1e-12
    assert mean_pairwise_iou(a[:1]) is None


def test_nearest_original_excludes_self_for_originals():
    originals = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    l2, cosine, index = nearest_original(originals, originals, exclude_self=True)
    assert index.tolist() == [2, 2, 0] and torch.allclose(l2, torch.tensor([1.0, 18 ** 0.5, 1.0], dtype=torch.float64))
    l2, _, index = nearest_original(torch.tensor([[3.0, 4.1]]), originals)
    assert index.tolist() == [1] and abs(float(l2[0]) - 0.1) < 1e-6
    assert abs(matched_noise_scale(4.0, 16) - 1.0) < 1e-12


def test_table_copies_are_not_novel_and_noise_is():
    torch.manual_seed(0)
    spec = select_parameters(digits_cnn((1, 8, 8), 10, 8), ["bn4"])
    zoo = torch.randn(30, spec.dim)
    normalizer = memorization_normalizer(spec, zoo)
    y = torch.randint(0, 10, (50,))

    def predictions(vectors):  # a stand-in network: predicted class from the vector's sign pattern
        return ((vectors[:, :50] > 0).long() * 3 + y) % 10

    originals = Population("originals", zoo, predictions(zoo))
    copies = Population("generated", zoo[:10].clone(), predictions(zoo[:10]))
    baselines = baseline_populations(zoo, normalizer, matched_scale=2.0, n=10, seed=0)
    for baseline in baselines:
        baseline.predictions = predictions(baseline.vectors)
    table, per_model = memorization_table(originals, copies, baselines, normalizer, y)
    assert table["generated"]["novel_fraction"] == 0.0 and table["generated"]["nn_l2_mean"] < 1e-6
    assert table["generated"]["max_iou_mean"] == 1.0
    assert table["noise_0.001"]["novel_fraction"] == 0.0
    assert table["noise_matched_2"]["novel_fraction"] == 1.0
    assert table["average"]["n"] == 1
    assert per_model["max_iou:generated"].shape == (10,)
