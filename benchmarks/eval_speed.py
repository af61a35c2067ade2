"""Evaluating many parameter sets: the naive way vs. pdiff's (head once, then the tail per model or
vmapped).

    python benchmarks/eval_speed.py --out FILE.json [--models 200]

Naive: for each model, load its full state dict into the network and run the whole test set through
it. Cases: the embedded task's BatchNorm subset (digits CNN, bn3+bn4, 539 real test images), the
same network with every parameter generated, and CIFAR ResNet-18's layer4.1.bn1/bn2 on synthetic
32x32 inputs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from compose import compose_config
from table_output import emit

from pdiff.data.datasets import load_dataset
from pdiff.data.tasknets import digits_cnn, resnet18_cifar
from pdiff.evaluation.predictions import ParameterEvaluator
from pdiff.zoo.params import read_vector, select_parameters


@torch.no_grad()
def naive_predictions(
    model: torch.nn.Module, spec, vectors: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """One model at a time: a full state dict per model, the whole network over the test set."""
    base = {name: value.clone() for name, value in model.state_dict().items()}
    out = []
    for vector in vectors:
        state = dict(base)
        state.update(
            {name: value[0] for name, value in spec.unflatten(vector.reshape(1, -1)).items()}
        )
        model.load_state_dict(state)
        out.append(torch.cat([model(chunk).argmax(-1) for chunk in x.split(1000)]))
    model.load_state_dict(base)
    return torch.stack(out)


def compare(
    model: torch.nn.Module, layers: list[str], x: torch.Tensor, y: torch.Tensor, n: int
) -> dict:
    torch.manual_seed(0)
    model.eval()
    spec = select_parameters(model, layers)
    base = read_vector(model, spec)
    vectors = base + 0.05 * base.abs().mean() * torch.randn(n, spec.dim)
    started = time.perf_counter()
    naive = naive_predictions(model, spec, vectors, x)
    naive_s = time.perf_counter() - started
    started = time.perf_counter()
    fast = ParameterEvaluator(model, spec, x).predictions(vectors)
    pdiff_s = time.perf_counter() - started
    started = time.perf_counter()
    vmapped = ParameterEvaluator(model, spec, x, batched=True).predictions(vectors)
    vmap_s = time.perf_counter() - started
    return {
        "params_per_model": spec.dim,
        "test_images": len(x),
        "models": n,
        "naive_s": round(naive_s, 3),
        "pdiff_s": round(pdiff_s, 3),
        "speedup": round(naive_s / pdiff_s, 2),
        "same_predictions": bool(torch.equal(naive, fast)),
        "vmap_s": round(vmap_s, 3),
        "vmap_speedup": round(naive_s / vmap_s, 2),
        "vmap_same_predictions": bool(torch.equal(naive, vmapped)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--resnet-images", type=int, default=500)
    args = parser.parse_args()
    cfg = compose_config(["task=digits_cnn", "paths.output_dir=unused"])
    data = load_dataset(cfg.data)
    cnn = digits_cnn((1, 8, 8), 10, cfg.task.net.width)
    images = torch.randn(args.resnet_images, 3, 32, 32)
    results = {
        "bn_subset": compare(
            cnn, list(cfg.task.param.layers), data.x_test, data.y_test, args.models
        ),
        "whole_model": compare(cnn, ["*"], data.x_test, data.y_test, args.models),
        "resnet18_bn_subset": compare(
            resnet18_cifar((3, 32, 32), 100),
            ["layer4.1.bn1", "layer4.1.bn2"],
            images,
            torch.randint(0, 100, (len(images),)),
            args.models,
        ),
    }
    emit(
        f"evaluating {args.models} parameter sets, {torch.get_num_threads()} threads",
        ["case", *results["bn_subset"]],
        [[case, *row.values()] for case, row in results.items()],
        results,
        args.out,
    )


if __name__ == "__main__":
    main()
