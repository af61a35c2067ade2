"""Generator training throughput (plain vs DeepSpeed, 1 and 2 ranks) and per-rank memory under
ZeRO-0 vs ZeRO-3.

    python benchmarks/train_speed.py --out FILE.json [--steps 300] [--memory-dim 100000]

Throughput: pdiff's own training loop (pdiff.training.fit.fit) on the default autoencoder (D=128,
K=200) and the default latent denoiser ([4, 16] latents), as configured in configs/, full global
batch of 200. Two ranks run under torchrun with one thread each; the single process keeps torch's
default threads. Memory: an MLP autoencoder of over 50M parameters (D=--memory-dim), AdamW; per
rank, the bytes of its parameters (its partitions under ZeRO-3), of optimiser state + fp32 masters
not shared with them, and the process's peak RSS. Compare ratios within one run: the machine is
noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from compose import REPO, compose_config
from omegaconf import DictConfig, OmegaConf
from table_output import emit

from pdiff.diffusion.gaussian import GaussianDiffusion, linear_betas
from pdiff.diffusion.noise import BatchNoise
from pdiff.generators.latent import build_autoencoder, build_denoiser
from pdiff.generators.nets.autoencoder import reconstruction_loss
from pdiff.training import distributed
from pdiff.training.fit import build_engine, fit

THROUGHPUT = [("plain", 1, 0), ("deepspeed", 1, 0), ("deepspeed", 2, 0), ("deepspeed", 2, 2)]
MEMORY = [(1, 0), (1, 3), (2, 0), (2, 3)]
MIB = 2**20


class MetricsInMemory:
    """A tracker that keeps what the loop logs (no files)."""

    def __init__(self):
        self.rows: list[dict] = []

    def log(self, metrics: dict) -> None:
        self.rows.append(metrics)

    def rewind(self, phase: str, step: int) -> None:
        """Drop the rows of `phase` logged after `step`, as the file tracker does."""
        self.rows = [row for row in self.rows if row.get(f"{phase}/step", -1) <= step]


def _cfg(trainer: str, zero_stage: int, steps: int, **ae) -> DictConfig:
    """The digits task's config (its latent design), with this trainer and a benchmark-sized
    optimisation."""
    cfg = compose_config(["task=digits_cnn", f"trainer={trainer}", "paths.output_dir=unused"])
    optim, cadence = (
        {"steps": steps, "batch_size": 200, "warmup_steps": 10},
        {"log_every": 50, "save_every": 10**9},
    )
    return OmegaConf.merge(
        cfg,
        {
            "trainer": {"zero_stage": zero_stage},
            "ae": {**ae, "optim": optim, "cadence": cadence},
            "diffusion": {"optim": optim, "cadence": cadence},
        },
    )


def throughput_worker(trainer: str, zero_stage: int, steps: int, out: Path) -> None:
    env = distributed.detect()
    if trainer == "deepspeed":
        distributed.start(env)
    cfg = _cfg(trainer, zero_stage, steps)
    result = {}
    with tempfile.TemporaryDirectory() as scratch:
        zoo = torch.randn(200, 128, generator=torch.Generator().manual_seed(0))
        latents = torch.randn(200, 4, 16, generator=torch.Generator().manual_seed(1))
        diffusion = GaussianDiffusion(linear_betas(cfg.diffusion.timesteps))
        models = {
            "autoencoder": (build_autoencoder(cfg.ae, 128), reconstruction_loss, zoo, cfg.ae),
            "denoiser": (
                build_denoiser(cfg.denoiser, 4),
                diffusion.training_losses,
                latents,
                cfg.diffusion,
            ),
        }
        for name, (model, loss, data, node) in models.items():
            tracker = MetricsInMemory()
            fit(
                model,
                loss,
                data,
                node.optim,
                node.cadence,
                cfg.trainer,
                name=name,
                seed=0,
                checkpoint_dir=Path(scratch) / name,
                tracker=tracker,
            )
            windows = [row[f"{name}/steps_per_s"] for row in tracker.rows][
                1:
            ]  # the first window holds warm-up
            result[name] = {
                "steps_per_s": statistics.median(windows),
                "params": sum(p.numel() for p in model.parameters()),
            }
    if env.is_main:
        out.write_text(json.dumps(result))
    distributed.shutdown()


def memory_worker(zero_stage: int, dim: int, out: Path) -> None:
    env = distributed.detect()
    distributed.start(env)
    cfg = _cfg("deepspeed", zero_stage, 3, hidden=[256], latent_dim=64)
    model = build_autoencoder(cfg.ae, dim)
    params = sum(p.numel() for p in model.parameters())
    engine = build_engine(
        model, cfg.ae.optim, cfg.trainer, micro_batch=2, world_size=env.world_size
    )
    data = torch.randn(2 * env.world_size, dim)
    for step in range(3):
        rows = slice(env.rank * 2, env.rank * 2 + 2)
        engine.backward(
            reconstruction_loss(engine, data[rows], BatchNoise(0, step, len(data), rows))
        )
        engine.step()
    memory = engine.memory_bytes()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gathered = [None] * env.world_size
    torch.distributed.all_gather_object(
        gathered, {**memory, "peak_rss": peak_rss, "rank": env.rank}
    )
    if env.is_main:
        out.write_text(json.dumps({"params": params, "ranks": gathered}))
    distributed.shutdown()


def launch(ranks: int, args: list[str]) -> None:
    """This script as a worker: one process, or `ranks` processes under torchrun."""
    script = [str(Path(__file__).resolve()), *args]
    prefix = (
        [sys.executable]
        if ranks == 1
        else [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks)]
    )
    env = dict(os.environ, PDIFF_QUIET="1", PYTHONPATH=str(REPO))
    done = subprocess.run([*prefix, *script], capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--memory-dim", type=int, default=100_000)
    parser.add_argument("--worker", choices=["throughput", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--trainer", default="plain", help=argparse.SUPPRESS)
    parser.add_argument("--zero-stage", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "throughput":
        return throughput_worker(args.trainer, args.zero_stage, args.steps, args.out)
    if args.worker == "memory":
        return memory_worker(args.zero_stage, args.memory_dim, args.out)

    throughput, memory = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for trainer, ranks, stage in THROUGHPUT:
            out = Path(scratch) / f"t-{trainer}-{ranks}-{stage}.json"
            launch(
                ranks,
                [
                    "--worker",
                    "throughput",
                    "--trainer",
                    trainer,
                    "--zero-stage",
                    str(stage),
                    "--steps",
                    str(args.steps),
                    "--out",
                    str(out),
                ],
            )
            for model, row in json.loads(out.read_text()).items():
                throughput.append(
                    {
                        "model": model,
                        "trainer": trainer,
                        "ranks": ranks,
                        "zero_stage": stage,
                        "params": row["params"],
                        "steps_per_s": round(row["steps_per_s"], 1),
                        "samples_per_s": round(row["steps_per_s"] * 200),
                    }
                )
        for ranks, stage in MEMORY:
            out = Path(scratch) / f"m-{ranks}-{stage}.json"
            launch(
                ranks,
                [
                    "--worker",
                    "memory",
                    "--zero-stage",
                    str(stage),
                    "--memory-dim",
                    str(args.memory_dim),
                    "--out",
                    str(out),
                ],
            )
            result = json.loads(out.read_text())
            for rank in result["ranks"]:
                memory.append(
                    {
                        "ranks": ranks,
                        "zero_stage": stage,
                        "rank": rank["rank"],
                        "params": result["params"],
                        "param_mib": round(rank["params"] / MIB, 1),
                        "optimizer_mib": round(rank["optimizer"] / MIB, 1),
                        "peak_rss_mib": round(rank["peak_rss"] / MIB),
                    }
                )
    for row in throughput:
        base = next(r for r in throughput if r["model"] == row["model"] and r["trainer"] == "plain")
        row["vs_plain"] = round(row["steps_per_s"] / base["steps_per_s"], 2)
    emit(
        "generator training throughput (global batch 200)",
        list(throughput[0]),
        [list(r.values()) for r in throughput],
        {},
        args.out,
    )
    emit(
        f"per-rank memory, {memory[0]['params'] / 1e6:.1f}M-parameter autoencoder + AdamW",
        list(memory[0]),
        [list(r.values()) for r in memory],
        {"throughput": throughput, "memory": memory, "steps": args.steps},
        args.out,
    )


if __name__ == "__main__":
    main()
