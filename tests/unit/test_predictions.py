import copy

import pytest
import torch

from pdiff.data.tasknets import conv1d_bn, digits_cnn, mlp_bn, resnet18_cifar
from pdiff.evaluation.predictions import ParameterEvaluator
from pdiff.zoo.params import (
    read_vector,
    select_parameters,
)
from tests.helpers.statistics import trained_statistics


class ResidualNet(torch.nn.Module):
    """Not an nn.Sequential (a residual forward): evaluated whole, as any user network is."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.fc1 = torch.nn.Linear(input_shape[0], 16)
        self.bn1 = torch.nn.BatchNorm1d(16)
        self.head = torch.nn.Linear(16, num_classes)

    def forward(self, x):
        h = self.fc1(x)
        return self.head(torch.relu(self.bn1(h)) + h)


def _naive_predictions(model, spec, vectors, x):
    """One model at a time: write its vector into a copy, full forward over the test set."""
    out = []
    for vector in vectors:
        candidate = copy.deepcopy(model).eval()
        params = dict(candidate.named_parameters())
        with torch.no_grad():
            for name, value in spec.unflatten(vector[None]).items():
                params[name].copy_(value[0])
            out.append(candidate(x).argmax(-1))
    return torch.stack(out)


@pytest.mark.parametrize(
    "build, layers, shape",
    [
        (lambda: digits_cnn((1, 8, 8), 10, 8), ["bn3", "bn4"], (1, 8, 8)),
        (lambda: digits_cnn((1, 8, 8), 10, 8), ["*"], (1, 8, 8)),
        (lambda: mlp_bn((6,), 4, [32, 32]), ["bn1", "bn2"], (6,)),
        (lambda: resnet18_cifar((3, 32, 32), 10), ["layer4.1.bn1", "layer4.1.bn2"], (3, 32, 32)),
        (lambda: ResidualNet((6,), 4), ["bn1"], (6,)),
    ],
)
@pytest.mark.parametrize("batched", [False, True])
def test_batched_evaluation_matches_naive(build, layers, shape, batched):
    torch.manual_seed(0)
    model = build()
    with torch.no_grad():  # non-trivial running statistics, as after training
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    model.eval()
    spec = select_parameters(model, layers)
    base = read_vector(model, spec)
    vectors = base + 0.3 * base.abs().mean() * torch.randn(7, spec.dim)
    x = torch.randn(24, *shape)
    evaluator = ParameterEvaluator(model, spec, x, max_chunk=3, batched=batched, batch_size=10)
    batched = evaluator.predictions(vectors)
    assert torch.equal(batched, _naive_predictions(model, spec, vectors, x))
    assert torch.equal(read_vector(model, spec), base)  # the base network is left untouched


@pytest.mark.parametrize(
    "build, layers, shape",
    [
        (lambda: resnet18_cifar((3, 32, 32), 10), ["layer4.1.bn1", "layer4.1.bn2"], (3, 32, 32)),
        (lambda: digits_cnn((1, 8, 8), 10, 8), ["*"], (1, 8, 8)),
    ],
)
def test_batched_evaluation_runs_under_bf16_autocast(build, layers, shape):
    """task.precision=bf16 sets autocast around evaluation; vmapped BatchNorm once refused bf16
    inputs with float32 statistics (`expected scalar type BFloat16 but found Float`) after
    collection and training had run."""
    torch.manual_seed(0)
    model = build().eval()
    spec = select_parameters(model, layers)
    base = read_vector(model, spec)
    vectors = base + 0.1 * base.abs().mean() * torch.randn(5, spec.dim)
    x = torch.randn(24, *shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        evaluator = ParameterEvaluator(model, spec, x, max_chunk=2, batched=True, batch_size=10)
        predicted = evaluator.predictions(vectors)
    agree = (predicted == _naive_predictions(model, spec, vectors, x)).float().mean()
    assert (
        predicted.shape == (5, 24) and agree >= 0.9
    )  # the head ran in bf16: near ties may round apart


@pytest.mark.parametrize(
    "build, layers, shape, recalibrated",
    [
        (lambda: digits_cnn((1, 8, 8), 10, 4), ["*"], (1, 8, 8), {"bn1", "bn2", "bn3", "bn4"}),
        (
            lambda: mlp_bn((6,), 4, [16, 16]),
            ["bn2"],
            (6,),
            {"bn2"},
        ),  # bn1 is in the frozen head: its own statistics
    ],
)
def test_recalibrated_statistics_are_those_of_a_fresh_cumulative_pass(
    build, layers, shape, recalibrated
):
    torch.manual_seed(0)
    model = build().eval()
    spec = select_parameters(model, layers)
    base = read_vector(model, spec)
    vectors = base + 0.3 * torch.randn(4, spec.dim)
    x, train = (
        torch.randn(30, *shape),
        [torch.randn(16, *shape), torch.randn(16, *shape), torch.randn(5, *shape)],
    )
    predicted = ParameterEvaluator(model, spec, x, max_chunk=3, recalibration=train).predictions(
        vectors
    )
    expected = []
    for vector in vectors:
        candidate = copy.deepcopy(model)
        params = dict(candidate.named_parameters())
        with torch.no_grad():
            for name, value in spec.unflatten(vector[None]).items():
                params[name].copy_(value[0])
            for name, module in candidate.named_modules():
                if name in recalibrated:
                    module.reset_running_stats()
                    module.momentum = None
                    module.train()
            for batch in train:
                candidate(batch)
            expected.append(candidate.eval()(x).argmax(-1))
    assert torch.equal(predicted, torch.stack(expected))
    plain = ParameterEvaluator(model, spec, x, max_chunk=3).predictions(vectors)
    assert not torch.equal(plain, predicted)  # recalibration changed something
    assert all(
        m.momentum == 0.1 and not m.training
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    )


@pytest.mark.parametrize("batched", [False, True])
def test_evaluation_uses_each_vectors_own_statistics(batched):
    shape = (1, 40)
    models = [trained_statistics(conv1d_bn(shape, 10, [6, 6]), shape, seed) for seed in range(3)]
    spec = select_parameters(models[0], ["*"], statistics=True)
    vectors = torch.stack([read_vector(model, spec) for model in models])
    x = torch.randn(50, *shape)
    evaluator = ParameterEvaluator(copy.deepcopy(models[0]), spec, x, batched=batched)
    with torch.no_grad():
        expected = torch.stack([model(x).argmax(-1) for model in models])
    assert torch.equal(evaluator.predictions(vectors), expected)
    assert not torch.equal(expected[1], expected[2])
