from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from pdiff.data.tasknets import conv1d_bn, digits_cnn, mlp_bn, resnet18_cifar
from pdiff.zoo.permutation_groups import PermutationGroup, PermutedAxis, permutation_groups
from pdiff.zoo.rebasin import align, apply_permutations, weight_matching

# name -> (builder, input shape of one example)
NETS: dict[str, tuple[Callable[[], nn.Sequential], tuple[int, ...]]] = {
    "mlp_bn": (lambda: mlp_bn((40,), 10, [32, 24]), (40,)),
    "mlp": (lambda: mlp_bn((40,), 10, [32, 24], batch_norm=False), (40,)),
    "conv1d_bn": (lambda: conv1d_bn((40,), 10, [8, 12]), (40,)),
    "digits_cnn": (lambda: digits_cnn((1, 8, 8), 10, 4), (1, 8, 8)),
}


def _model(name: str, seed: int) -> nn.Sequential:
    """A randomly initialised net with non-trivial BN affine parameters and running statistics, in
    eval mode."""
    build, shape = NETS[name]
    torch.manual_seed(seed)
    model = build()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
        model.train()
        for _ in range(3):
            model(torch.randn(16, *shape))
    return model.eval()


def _flat(state: dict[str, torch.Tensor], model: nn.Module) -> torch.Tensor:
    return torch.cat([state[name].reshape(-1) for name, _ in model.named_parameters()])


def _random_perms(groups: list[PermutationGroup], seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(group.size, generator=generator) for group in groups]


@pytest.mark.parametrize("name", list(NETS))
def test_aligned_model_computes_the_same_function(name):
    model_a, model_b = _model(name, 0), _model(name, 1)
    state_b = model_b.state_dict()
    aligned = align(model_b, model_a.state_dict(), state_b)
    assert aligned.keys() == state_b.keys()
    fresh = NETS[name][0]()
    fresh.load_state_dict(aligned)
    fresh.eval()
    inputs = torch.randn(32, *NETS[name][1])
    with torch.no_grad():
        assert torch.allclose(fresh(inputs), model_b(inputs), atol=1e-5)
    # the permutations are non-trivial, and num_batches_tracked is passed through
    assert any(not torch.equal(aligned[k], v) for k, v in state_b.items())
    for key, value in state_b.items():
        if key.endswith("num_batches_tracked"):
            assert aligned[key] is value


@pytest.mark.parametrize("name", list(NETS))
def test_alignment_recovers_a_known_permutation(name):
    model = _model(name, 0)
    reference = model.state_dict()
    groups = permutation_groups(model)
    permuted = apply_permutations(groups, reference, _random_perms(groups, 7))
    assert torch.dist(_flat(permuted, model), _flat(reference, model)) > 1.0
    aligned = align(model, reference, permuted, seed=3)
    for key, value in reference.items():
        assert torch.allclose(aligned[key].double(), value.double(), atol=1e-6), key
    assert torch.dist(_flat(aligned, model), _flat(reference, model)) < 1e-6


@pytest.mark.parametrize("name", list(NETS))
def test_alignment_reduces_distance_between_independent_models(name):
    model_a, model_b = _model(name, 0), _model(name, 1)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    groups = permutation_groups(model_a)
    perms = weight_matching(groups, state_a, state_b, seed=0)
    assert all(
        torch.equal(p, q) for p, q in zip(perms, weight_matching(groups, state_a, state_b, seed=0))
    )
    aligned = apply_permutations(groups, state_b, perms)
    before = torch.dist(_flat(state_a, model_a), _flat(state_b, model_a))
    after = torch.dist(_flat(state_a, model_a), _flat(aligned, model_a))
    assert after < before


class Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


def test_residual_networks_are_rejected_naming_the_module():
    custom = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), Residual(16), nn.Linear(16, 2))
    with pytest.raises(ValueError, match=r"'2' of type Residual"):
        permutation_groups(custom)
    with pytest.raises(ValueError, match=r"'2' of type Residual"):
        align(custom, custom.state_dict(), custom.state_dict())
    with pytest.raises(ValueError, match=r"'layer1.0' of type BasicBlock"):
        permutation_groups(resnet18_cifar((3, 32, 32), 10))
    with pytest.raises(ValueError, match=r"only plain nn.Sequential.*got Residual"):
        permutation_groups(Residual(4))


def test_layouts_that_would_permute_wrongly_are_rejected():
    with pytest.raises(ValueError, match=r"'1' of type Unflatten"):
        permutation_groups(
            nn.Sequential(nn.Linear(8, 16), nn.Unflatten(1, (4, 4)), nn.Conv1d(4, 2, 3))
        )
    with pytest.raises(ValueError, match=r"'0' of type Conv2d.*grouped"):
        permutation_groups(nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.Conv2d(8, 2, 3)))
    with pytest.raises(ValueError, match=r"'1' of type Linear.*without a Flatten"):
        permutation_groups(nn.Sequential(nn.Conv1d(1, 4, 3), nn.Linear(6, 2)))


def test_mlp_bn_groups_and_keys():
    groups = permutation_groups(mlp_bn((40,), 10, [16, 16]))

    def bn(index: int) -> tuple[PermutedAxis, ...]:
        return tuple(
            PermutedAxis(f"bn{index}.{attr}", 0)
            for attr in ("weight", "bias", "running_mean", "running_var")
        )

    assert groups == [
        PermutationGroup(
            "fc1", 16, (PermutedAxis("fc1.weight", 0), *bn(1), PermutedAxis("fc2.weight", 1))
        ),
        PermutationGroup(
            "fc2", 16, (PermutedAxis("fc2.weight", 0), *bn(2), PermutedAxis("head.weight", 1))
        ),
    ]


def test_conv_to_linear_flatten_permutes_channel_blocks():
    groups = permutation_groups(conv1d_bn((40,), 10, [8, 12]))
    assert [group.name for group in groups] == ["conv1", "conv2"]
    assert groups[1].axes[-1] == PermutedAxis(
        "head.weight", 1, 10
    )  # 40 -> 20 -> 10 positions per channel
    assert permutation_groups(digits_cnn((1, 8, 8), 10, 4))[-1].axes[-1] == PermutedAxis(
        "fc.weight", 1, 1
    )
