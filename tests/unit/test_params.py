import pytest
import torch

from pdiff.config import Normalization
from pdiff.data.tasknets import digits_cnn, mlp_bn, resnet18_cifar
from pdiff.errors import ConfigError
from pdiff.zoo.params import (
    ParamNormalizer,
    ParamSpec,
    clamp_statistics,
    read_vector,
    select_parameters,
    split_network,
    tail_tensor_names,
    write_vector,
)
from tests.helpers.statistics import trained_statistics


def test_select_by_module_name_glob_and_all():
    model = digits_cnn((1, 8, 8), 10, 8)
    spec = select_parameters(model, ["bn3", "bn4"])
    assert spec.names == ["bn3.weight", "bn3.bias", "bn4.weight", "bn4.bias"]
    assert spec.dim == 4 * 32
    assert select_parameters(model, ["bn*.bias"]).names == [
        "bn1.bias",
        "bn2.bias",
        "bn3.bias",
        "bn4.bias",
    ]
    assert select_parameters(model, ["*"]).dim == sum(p.numel() for p in model.parameters())
    assert select_parameters(model, ["all"]).dim == sum(p.numel() for p in model.parameters())


def test_select_resnet_reference_subset_is_2048():
    spec = select_parameters(resnet18_cifar((3, 32, 32), 100), ["layer4.1.bn1", "layer4.1.bn2"])
    assert spec.dim == 2048


def test_pattern_matching_nothing_names_key_and_value():
    with pytest.raises(
        ConfigError, match=r"task.param.layers pattern 'layer9' matches no parameter"
    ):
        select_parameters(digits_cnn((1, 8, 8), 10, 8), ["bn3", "layer9"])


def test_flatten_unflatten_round_trip_and_json():
    model = mlp_bn((3, 4), 5, [16, 8])
    spec = select_parameters(model, ["bn1", "head"])
    vector = read_vector(model, spec)
    assert vector.shape == (spec.dim,)
    batched = torch.stack([vector, vector * 2])
    parts = spec.unflatten(batched)
    assert parts["head.weight"].shape == (2, 5, 8)
    assert torch.equal(spec.flatten({k: v[1] for k, v in parts.items()}), vector * 2)
    assert ParamSpec.from_json(spec.to_json()) == spec


def test_inconsistent_spec_json_is_rejected():
    items = select_parameters(digits_cnn((1, 8, 8), 10, 8), ["bn4"]).to_json()
    items[1]["offset"] += 1
    with pytest.raises(ValueError, match="inconsistent"):
        ParamSpec.from_json(items)


@pytest.mark.parametrize(
    "build, layers, shape",
    [
        (lambda: digits_cnn((1, 8, 8), 10, 8), ["bn3", "bn4"], (6, 1, 8, 8)),
        (lambda: mlp_bn((2, 5), 3, [16, 16]), ["bn2"], (6, 2, 5)),
        (lambda: resnet18_cifar((3, 32, 32), 10), ["layer4.1.bn1", "layer4.1.bn2"], (2, 3, 32, 32)),
        (lambda: digits_cnn((1, 8, 8), 10, 8), ["*"], (6, 1, 8, 8)),
    ],
)
def test_split_network_is_exact(build, layers, shape):
    torch.manual_seed(0)
    model = build().eval()
    spec = select_parameters(model, layers)
    head, tail = split_network(model, spec.entries[0].name)
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.allclose(tail(head(x)), model(x), atol=1e-6)
    names = tail_tensor_names(model, tail)
    assert set(spec.names) <= set(names)


@pytest.mark.parametrize("mode", list(Normalization))
def test_normalizer_round_trip(mode):
    model = digits_cnn((1, 8, 8), 10, 8)
    spec = select_parameters(model, ["bn3", "bn4"])
    zoo = read_vector(model, spec) + 0.01 * torch.randn(50, spec.dim)
    normalizer = ParamNormalizer.fit(spec, zoo, mode)
    normalized = normalizer.normalize(zoo)
    assert torch.allclose(normalizer.denormalize(normalized), zoo, atol=1e-5)
    assert abs(float(normalized.std()) - 1.0) < 0.1


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
    model = trained_statistics(mlp_bn((6,), 4, [5, 3]), (6,), 0)
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
