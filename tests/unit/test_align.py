"""Whole-model zoos aligned across runs: every tensor a hidden unit touches moves with it."""

import copy

import torch

from pdiff import atomic
from pdiff.data.tasknets import conv1d_bn
from pdiff.evaluation.predictions import ParameterEvaluator
from pdiff.zoo.align import align_runs
from pdiff.zoo.params import (
    read_vector,
    select_parameters,
)
from tests.helpers.statistics import trained_statistics


def test_alignment_permutes_the_statistics_with_their_channels(tmp_path):
    shape = (1, 40)
    models = [trained_statistics(conv1d_bn(shape, 10, [6, 6]), shape, seed) for seed in range(2)]
    spec = select_parameters(models[0], ["*"], statistics=True)
    paths = []
    for index, model in enumerate(models):
        path = tmp_path / f"run{index}.safetensors"
        vector = read_vector(model, spec)[None]
        atomic.write_safetensors(
            path, {"params": vector, "val_accuracy": torch.zeros(1, dtype=torch.float64)}
        )
        paths.append(path)
    aligned, record = align_runs(copy.deepcopy(models[0]), spec, paths, tmp_path / "aligned")
    moved = atomic.read_safetensors(aligned[1])["params"]
    assert record[1]["l2_after"] < record[1]["l2_before"]
    x = torch.randn(50, *shape)
    evaluator = ParameterEvaluator(copy.deepcopy(models[0]), spec, x)
    with torch.no_grad():
        logits = models[1](x)
    assert torch.equal(evaluator.predictions(moved)[0], logits.argmax(-1))
