"""Training speed of each autoencoder variant and of the latent denoiser on its latent, on this
machine.

    python benchmarks/generators.py --out FILE.json [--dims 128 2048] [--steps 20]

Full-batch steps of K=200 vectors, as the default main job trains them. Ratios within one run are
what to compare: the machine is noisy.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import torch
from compose import compose_config
from table_output import emit

from pdiff.diffusion.gaussian import GaussianDiffusion, linear_betas
from pdiff.diffusion.noise import BatchNoise
from pdiff.generators.latent import build_autoencoder, build_denoiser
from pdiff.generators.nets.autoencoder import reconstruction_loss

VARIANTS = ("mlp", "pdiff_v1", "pdiff_v2")


def steps_per_second(model: torch.nn.Module, loss_of, batch: torch.Tensor, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in range(steps + 3):
        if step == 3:  # warm-up steps are not timed
            started = time.perf_counter()
        loss = loss_of(batch, BatchNoise.whole(seed=0, step=step, size=len(batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 2048])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--k", type=int, default=200)
    args = parser.parse_args()
    diffusion = GaussianDiffusion(linear_betas(1000))
    rows = []
    for variant in VARIANTS:
        cfg = compose_config(["task=digits_cnn", f"ae={variant}", "paths.output_dir=unused"])
        for dim in args.dims:
            torch.manual_seed(0)
            autoencoder = build_autoencoder(cfg.ae, dim).train()
            zoo = torch.randn(args.k, dim)
            denoiser = build_denoiser(cfg.denoiser, autoencoder.latent_shape[0])
            latents = torch.randn(args.k, *autoencoder.latent_shape)
            rows.append(
                {
                    "ae": variant,
                    "dim": dim,
                    "latent_shape": list(autoencoder.latent_shape),
                    "ae_params": sum(p.numel() for p in autoencoder.parameters()),
                    "ae_steps_per_s": round(
                        steps_per_second(
                            autoencoder, partial(reconstruction_loss, autoencoder), zoo, args.steps
                        ),
                        2,
                    ),
                    "denoiser_steps_per_s": round(
                        steps_per_second(
                            denoiser,
                            partial(diffusion.training_losses, denoiser),
                            latents,
                            args.steps,
                        ),
                        2,
                    ),
                }
            )
    emit(
        f"generator training speed, full batch K={args.k}, {torch.get_num_threads()} threads",
        list(rows[0]),
        [list(row.values()) for row in rows],
        {"k": args.k, "steps": args.steps, "rows": rows},
        args.out,
    )


if __name__ == "__main__":
    main()
