"""p-diff's reference job on one device: ResNet-18 CIFAR throughput, collection, evaluation,
generator, sampling.

    python benchmarks/gpu.py --out FILE.json [--device auto|cpu|cuda] [--models N] [--images N]

Everything runs through pdiff's own code on synthetic CIFAR-shaped data (the real data cannot be
fetched here), with pdiff's device settings (TF32, cudnn autotuning, channels-last, bf16 autocast):
- base training images/s (fp32 and bf16) and its model FLOP utilisation (FLOPs counted by torch on
  one step; peak: --peak-tflops, 790 for an H200 in bf16, unknown on a CPU);
- one collection checkpoint (an epoch of 50,000 augmented images, layer4.1.bn1/bn2 trained);
- evaluation of N generated BN subsets on the test images: naive (each model whole) vs pdiff (head
  once, then the tail, vmapped), with the count of differing predictions;
- autoencoder and denoiser steps/s (the default latent design at D=2,048) and sampling N models
  (DDPM, DDIM);
- the projected wall time of the reference job: 30 base epochs + 200 collection epochs + the
  generator's default steps + sampling + evaluating 200 models on 10,000 images. On a GPU the goal
  is under an hour.
On a CPU the defaults shrink (--models 8, --images 500, fewer steps) so it ends in minutes: every
row says what it measured, and the projection scales the measured rates.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from compose import compose_config
from omegaconf import OmegaConf
from table_output import emit
from torch.utils.flop_counter import FlopCounterMode

from pdiff.data.augment import Augmentation
from pdiff.data.tasknets import resnet18_cifar
from pdiff.diffusion.gaussian import build_diffusion
from pdiff.diffusion.noise import BatchNoise
from pdiff.evaluation.predictions import ParameterEvaluator
from pdiff.generators.latent import build_autoencoder, build_denoiser
from pdiff.generators.nets.autoencoder import reconstruction_loss
from pdiff.training.devices import autocast, memory_format, resolve_device, synchronize
from pdiff.training.fit import build_engine
from pdiff.zoo.collect import sgd_step, training_batch
from pdiff.zoo.params import read_vector, select_parameters

TRAIN_IMAGES, TEST_IMAGES, BASE_EPOCHS, COLLECT_EPOCHS, K = 50_000, 10_000, 30, 200, 200
LAYERS = ["layer4.1.bn1", "layer4.1.bn2"]


def timed(device: torch.device, work, repeats: int) -> float:
    """Seconds per call of `work` after one untimed warm-up call."""
    work()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    synchronize(device)
    return (time.perf_counter() - started) / repeats


def base_training(
    device, precision: str, batch: int, steps: int, peak_tflops: float | None
) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch * 4, 3, 32, 32, device=device)
    x = x.to(memory_format=memory_format(device, x))
    y = torch.randint(0, 100, (batch * 4,), device=device)
    model = (
        resnet18_cifar((3, 32, 32), 100).to(device, memory_format=memory_format(device, x)).train()
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    augment = Augmentation(rotate_degrees=15.0)
    counter = iter(range(10**9))

    def step():
        with autocast(device, precision):
            sgd_step(model, optimizer, *training_batch(x, y, next(counter), batch, 0, augment))

    with FlopCounterMode(display=False) as flops:
        step()
    seconds = timed(device, step, steps)
    row = {
        "images_per_s": round(batch / seconds, 1),
        "flop_per_image": flops.get_total_flops() / batch,
    }
    achieved = row["flop_per_image"] * row["images_per_s"]
    row["mfu"] = round(achieved / (peak_tflops * 1e12), 4) if peak_tflops else None
    row["tflops"] = round(achieved / 1e12, 2)
    return row


def collection_checkpoint(device, batch: int, steps: int) -> dict:
    """One checkpoint = one epoch of augmented images with only the subset trained (bf16 autocast)."""
    torch.manual_seed(0)
    x = torch.randn(batch * 4, 3, 32, 32, device=device)
    y = torch.randint(0, 100, (batch * 4,), device=device)
    model = (
        resnet18_cifar((3, 32, 32), 100).to(device, memory_format=memory_format(device, x)).eval()
    )
    spec = select_parameters(model, LAYERS)
    for name, param in model.named_parameters():
        param.requires_grad_(name in spec.names)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9
    )
    counter = iter(range(10**9))

    def step():
        with autocast(device, "bf16"):
            sgd_step(
                model, optimizer, *training_batch(x, y, next(counter), batch, 0, Augmentation(15.0))
            )

    seconds = timed(device, step, steps) * (TRAIN_IMAGES // batch)
    return {"seconds_per_checkpoint": round(seconds, 2)}


@torch.no_grad()
def evaluation(device, models: int, images: int) -> dict:
    torch.manual_seed(0)
    model = resnet18_cifar((3, 32, 32), 100).to(device).eval()
    spec = select_parameters(model, LAYERS)
    base = read_vector(model, spec)
    vectors = (base + 0.05 * torch.randn(models, spec.dim, device=device)).cpu()
    x = torch.randn(images, 3, 32, 32, device=device)
    params = dict(model.named_parameters())

    def naive():
        out = []
        for vector in vectors.to(device):
            for name, value in spec.unflatten(vector[None]).items():
                params[name].copy_(value[0])
            out.append(torch.cat([model(chunk).argmax(-1) for chunk in x.split(1000)]).cpu())
        return torch.stack(out)

    started = time.perf_counter()
    slow = naive()
    synchronize(device)
    naive_s = time.perf_counter() - started
    for name, value in spec.unflatten(base[None]).items():
        params[name].copy_(value[0])
    started = time.perf_counter()
    fast = ParameterEvaluator(model, spec, x, max_chunk=models, batched=True).predictions(vectors)
    synchronize(device)
    fast_s = time.perf_counter() - started
    return {
        "models": models,
        "images": images,
        "naive_s": round(naive_s, 3),
        "pdiff_s": round(fast_s, 4),
        "speedup": round(naive_s / fast_s, 1),
        "differing_predictions": int((slow != fast).sum()),
    }


def generator_steps(device, cfg, steps: int) -> dict:
    """Steps/s of the default autoencoder (D=2,048, K=200 full batch) and of the latent denoiser."""
    torch.manual_seed(0)
    rates = {}
    diffusion = build_diffusion(cfg.diffusion)
    networks = {
        "ae": (
            build_autoencoder(cfg.ae, 2048),
            reconstruction_loss,
            torch.randn(K, 2048),
            cfg.ae.optim,
        ),
        "diffusion": (
            build_denoiser(cfg.denoiser, 4),
            diffusion.training_losses,
            torch.randn(K, 4, 16),
            cfg.diffusion.optim,
        ),
    }
    for name, (network, loss_of_batch, data, optim) in networks.items():
        engine = build_engine(network, optim, cfg.trainer, K, 1, device)
        rates[f"{name}_steps_per_s"] = round(
            1 / timed(device, training_step(engine, loss_of_batch, data.to(device)), steps), 1
        )
    return rates


def training_step(engine, loss_of_batch, batch: torch.Tensor):
    """One optimiser step of `engine` on the whole `batch`, with fresh noise each call."""
    counter = iter(range(10**9))

    def step():
        noise = BatchNoise(0, next(counter), len(batch), slice(0, len(batch)), device=engine.device)
        engine.backward(loss_of_batch(engine, batch, noise))
        engine.step()

    return step


@torch.no_grad()
def sampling(device, cfg, models: int) -> dict:
    diffusion = build_diffusion(cfg.diffusion)
    denoiser = build_denoiser(cfg.denoiser, 4).to(device).eval()
    out = {}
    for name, sampler in (
        ("ddpm", {"name": "ddpm"}),
        ("ddim", {"name": "ddim", "steps": 60, "eta": 0.0}),
    ):
        sampler_cfg = OmegaConf.create(sampler)
        seconds = timed(
            device,
            lambda c=sampler_cfg: diffusion.sample(
                denoiser, (models, 4, 16), c, torch.Generator().manual_seed(0), device
            ),
            1,
        )
        out[f"{name}_s"] = round(seconds, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--models", type=int, help="generated models to evaluate (default 200 on a GPU, 8 on a CPU)"
    )
    parser.add_argument(
        "--images", type=int, help="test images (default 10,000 on a GPU, 500 on a CPU)"
    )
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's peak (default 790: H200 bf16; none on CPU)"
    )
    args = parser.parse_args()
    device = resolve_device(args.device, deterministic=False)  # throughput: cudnn autotuning
    on_gpu = device.type == "cuda"
    models, images = (
        args.models or (200 if on_gpu else 8),
        args.images or (TEST_IMAGES if on_gpu else 500),
    )
    peak = args.peak_tflops or (790.0 if on_gpu else None)
    batch, steps = (256, 20) if on_gpu else (32, 2)
    cfg = compose_config(["task=cifar100_resnet18", "paths.output_dir=unused"])
    result = {
        "device": str(torch.cuda.get_device_name(device) if on_gpu else "cpu"),
        "batch": batch,
    }
    result["base_fp32"] = base_training(device, "fp32", batch, steps, peak)
    result["base_bf16"] = base_training(device, "bf16", batch, steps, peak)
    result["collection"] = collection_checkpoint(device, batch, steps)
    result["evaluation"] = evaluation(device, models, images)
    result["generator"] = generator_steps(device, cfg, 20 if on_gpu else 5)
    result["sampling"] = sampling(device, cfg, K)
    fastest = max(result["base_fp32"]["images_per_s"], result["base_bf16"]["images_per_s"])
    evaluation_200 = result["evaluation"]["pdiff_s"] * (K / models) * (TEST_IMAGES / images)
    projected = {
        "base_training_s": BASE_EPOCHS * TRAIN_IMAGES / fastest,
        "collection_s": COLLECT_EPOCHS * result["collection"]["seconds_per_checkpoint"],
        "generator_s": cfg.ae.optim.steps / result["generator"]["ae_steps_per_s"]
        + cfg.diffusion.optim.steps / result["generator"]["diffusion_steps_per_s"],
        "sampling_s": result["sampling"]["ddpm_s"],
        "evaluation_s": evaluation_200,
    }
    projected["total_h"] = sum(projected.values()) / 3600
    result["projected_reference_job"] = {key: round(value, 2) for key, value in projected.items()}
    rows = [
        [
            "base training fp32",
            f"{result['base_fp32']['images_per_s']} img/s",
            f"MFU {result['base_fp32']['mfu']}, {result['base_fp32']['tflops']} TFLOP/s",
        ],
        [
            "base training bf16",
            f"{result['base_bf16']['images_per_s']} img/s",
            f"MFU {result['base_bf16']['mfu']}, {result['base_bf16']['tflops']} TFLOP/s",
        ],
        [
            "one collection checkpoint",
            f"{result['collection']['seconds_per_checkpoint']} s",
            "50,000 images",
        ],
        [
            f"evaluate {models} models x {images} images",
            f"{result['evaluation']['speedup']}x naive",
            f"{result['evaluation']['differing_predictions']} predictions differ",
        ],
        [
            "autoencoder / denoiser",
            f"{result['generator']['ae_steps_per_s']} / "
            f"{result['generator']['diffusion_steps_per_s']} steps/s",
            "D=2,048, K=200",
        ],
        [
            f"sample {K} models",
            f"DDPM {result['sampling']['ddpm_s']} s",
            f"DDIM {result['sampling']['ddim_s']} s",
        ],
        ["projected reference job", f"{projected['total_h']:.2f} h", "goal on a GPU: < 1 h"],
    ]
    emit(f"pdiff on {result['device']}", ["measure", "value", "note"], rows, result, args.out)
    print(
        f"gpu: projected reference job {projected['total_h']:.2f} h on {result['device']}; evaluation "
        f"{result['evaluation']['speedup']}x naive with {result['evaluation']['differing_predictions']} differences"
    )


if __name__ == "__main__":
    main()
