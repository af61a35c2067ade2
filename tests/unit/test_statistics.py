"""Vectors that carry their BatchNorm running statistics (task.param.statistics): selection,
collection, alignment and evaluation with each model's own statistics."""

import copy

import pytest
import torch

from pdiff import atomic
from pdiff.data.datasets import load_dataset
from pdiff.data.tasknets import conv1d_bn, digits_cnn, mlp_bn
from pdiff.errors import ConfigError
from pdiff.evaluation.predictions import ParameterEvaluator
from pdiff.zoo.align import align_runs
from pdiff.zoo.collect import check_runs, collect_checkpoints
from pdiff.zoo.params import (
    ParamSpec,
    clamp_statistics,
    read_vector,
    select_parameters,
    write_vector,
)
from tests.helpers.configs import compose_config


def _trained_statistics(
    model: torch.nn.Module, shape: tuple[int, ...], seed: int
) -> torch.nn.Module:
    """`model` after train-mode forwards on random inputs: running statistics that differ per model."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, *shape) * (1 + seed))
    return model.eval()


def test_statistics_follow_their_layer_in_state_dict_order_and_round_trip():
    model = mlp_bn((6,), 4, [5, 3])
    spec = select_parameters(model, ["*"], statistics=True)
    assert spec.names == [
        "fc1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "fc2.weight",
        "bn2.weight",
        "bn2.bias",
        "bn2.running_mean",
        "bn2.running_var",
        "head.weight",
        "head.bias",
    ]
    assert spec.parameter_names == [name for name, _ in model.named_parameters()]
    assert spec.variance_names == {"bn1.running_var", "bn2.running_var"}
    assert spec.dim == sum(p.numel() for p in model.parameters()) + 2 * (5 + 3)
    assert ParamSpec.from_json(spec.to_json()) == spec
    without = select_parameters(model, ["*"])
    assert without.names == spec.parameter_names and not without.variance_names
    subset = select_parameters(
        model, ["bn2"], statistics=True
    )  # only the selected layer's statistics
    assert subset.names == ["bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var"]


def test_write_vector_then_read_vector_is_the_identity_and_reaches_the_buffers():
    model = _trained_statistics(mlp_bn((6,), 4, [5, 3]), (6,), 0)
    spec = select_parameters(model, ["*"], statistics=True)
    vector = torch.randn(spec.dim)
    write_vector(model, spec, vector)
    assert torch.equal(read_vector(model, spec), vector)
    assert torch.equal(
        model.bn2.running_var, vector[spec.entries[9].offset : spec.entries[9].offset + 3]
    )


def test_negative_variances_are_clamped_at_zero_and_nothing_else_changes():
    spec = select_parameters(mlp_bn((6,), 4, [5]), ["*"], statistics=True)
    tensors = spec.unflatten(-torch.ones(2, spec.dim))
    clamped = clamp_statistics(spec, tensors)
    assert torch.equal(clamped["bn1.running_var"], torch.zeros(2, 5))
    assert all(
        torch.equal(clamped[name], tensors[name])
        for name in spec.names
        if name != "bn1.running_var"
    )


def test_whole_model_collection_keeps_the_runs_statistics_in_every_checkpoint(tmp_path):
    cfg = compose_config(["experiment=smoke", "task=digits_cnn", f"paths.output_dir={tmp_path}"])
    data = load_dataset(cfg.data)
    model = _trained_statistics(digits_cnn((1, 8, 8), 10, 8), (1, 8, 8), 1)
    spec = select_parameters(model, ["*"], statistics=True)
    statistics = {
        entry.name: model.state_dict()[entry.name].clone()
        for entry in spec.entries
        if entry.statistic
    }
    vectors, _ = collect_checkpoints(
        model, spec, data, cfg.task.collect, 3, False, 1, tmp_path / "s.pt"
    )
    for vector in vectors:
        carried = spec.unflatten(vector[None])
        assert all(torch.equal(carried[name][0], value) for name, value in statistics.items())
    assert not torch.equal(vectors[0], vectors[-1])  # the weights moved, the statistics did not


@pytest.mark.parametrize("batched", [False, True])
def test_evaluation_uses_each_vectors_own_statistics(batched):
    shape = (1, 40)
    models = [_trained_statistics(conv1d_bn(shape, 10, [6, 6]), shape, seed) for seed in range(3)]
    spec = select_parameters(models[0], ["*"], statistics=True)
    vectors = torch.stack([read_vector(model, spec) for model in models])
    x = torch.randn(50, *shape)
    evaluator = ParameterEvaluator(copy.deepcopy(models[0]), spec, x, batched=batched)
    with torch.no_grad():
        expected = torch.stack([model(x).argmax(-1) for model in models])
    assert torch.equal(evaluator.predictions(vectors), expected)
    assert not torch.equal(expected[1], expected[2])


def test_alignment_permutes_the_statistics_with_their_channels(tmp_path):
    shape = (1, 40)
    models = [_trained_statistics(conv1d_bn(shape, 10, [6, 6]), shape, seed) for seed in range(2)]
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


@pytest.mark.parametrize(
    "statistics, recalibrate, refused", [(False, 0, True), (True, 0, False), (False, 4, False)]
)
def test_runs_of_a_whole_batchnorm_network_need_carried_or_recalibrated_statistics(
    statistics, recalibrate, refused
):
    cfg = compose_config(["experiment=mnist1d_cnn_full"])
    model = conv1d_bn((1, 40), 10, [6, 6])
    spec = select_parameters(model, ["*"], statistics=statistics)
    if refused:
        with pytest.raises(
            ConfigError, match=r"task.param.statistics=true .* evaluate.recalibrate_batches > 0"
        ):
            check_runs(cfg.task.collect, model, spec, recalibrate)
    else:
        check_runs(cfg.task.collect, model, spec, recalibrate)
