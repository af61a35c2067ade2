"""Run under torchrun: for ZeRO stages 0-3, train an autoencoder with pdiff's loop, resume it from
its step-10 checkpoint, and write what rank 0 sees to the JSON file given as argv[1]."""

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from pdiff.config import Config
from pdiff.generators.latent import MLPAutoencoderConfig, build_autoencoder
from pdiff.generators.nets.autoencoder import reconstruction_loss
from pdiff.tracking import Tracker
from pdiff.training import distributed
from pdiff.training.fit import fit


def train(cfg, data, checkpoint_dir, tracker):
    torch.manual_seed(0)
    return fit(
        build_autoencoder(cfg.ae, data.shape[1]),
        reconstruction_loss,
        data,
        cfg.ae.optim,
        cfg.ae.cadence,
        cfg.trainer,
        name="ae",
        seed=0,
        checkpoint_dir=checkpoint_dir,
        tracker=tracker,
        ema_decay=0.9,
    )


def max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def main(out: Path) -> None:
    env = distributed.detect()
    distributed.start(env)
    data = torch.randn(40, 300, generator=torch.Generator().manual_seed(1))
    results, reference = {}, None
    variants = {
        "0": {"zero_stage": 0},
        "1": {"zero_stage": 1},
        "2": {"zero_stage": 2},
        "3": {"zero_stage": 3},
        "3+offload": {"zero_stage": 3, "offload_optimizer": True, "offload_params": True},
        "2+bf16": {"zero_stage": 2, "precision": "bf16"},
    }
    for stage, trainer in variants.items():
        cfg = OmegaConf.merge(
            OmegaConf.structured(Config),
            {"ae": OmegaConf.structured(MLPAutoencoderConfig)},
            {
                "trainer": {"name": "deepspeed", **trainer},
                "ae": {
                    "hidden": [64],
                    "latent_dim": 16,
                    "optim": {"steps": 20, "batch_size": 20, "warmup_steps": 2},
                    "cadence": {"save_every": 10},
                },
                "logger": {"name": "jsonl"},
            },
        )
        tracker = Tracker(out.parent / f"stage{stage}", cfg.logger, {}, enabled=env.is_main)
        uninterrupted = train(cfg, data, out.parent / f"stage{stage}" / "checkpoint", tracker)
        saved = sorted(p.name for p in (out.parent / f"stage{stage}" / "checkpoint").glob("step*"))
        resumed = train(
            cfg, data, out.parent / f"stage{stage}" / "checkpoint", tracker
        )  # loads step 10
        tracker.close()
        reference = reference or uninterrupted
        results[stage] = {
            "checkpoints": saved,
            "resume_diff": max_diff(uninterrupted.weights, resumed.weights),
            "resume_ema_diff": max_diff(uninterrupted.ema_weights, resumed.ema_weights),
            "diff_from_stage0": max_diff(reference.weights, uninterrupted.weights),
            "ema_diff_from_stage0": max_diff(reference.ema_weights, uninterrupted.ema_weights),
            "ema_differs_from_weights": max_diff(uninterrupted.weights, uninterrupted.ema_weights),
            "shapes_ok": all(
                uninterrupted.weights[k].shape == v.shape
                for k, v in build_autoencoder(cfg.ae, 300).state_dict().items()
            ),
            "dtypes": sorted({str(v.dtype) for v in uninterrupted.weights.values()}),
            "last_loss": uninterrupted.last_loss,
        }
    if env.is_main:
        out.write_text(json.dumps(results, indent=1))
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
