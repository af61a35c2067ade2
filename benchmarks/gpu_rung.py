"""The scale ladder's 10^6 rung on one device: its generator designs trained and sampled, timed.

    python benchmarks/gpu_rung.py --out FILE.json [--device auto|cpu|cuda] [--precision bf16|fp32]
        [--steps N] [--models N] [--set OVERRIDE ...]

The rung is experiment=mnist1d_mlp_1e6: an MLP 40-1024-1024-10, every parameter generated
(D = 1,101,834). Its zoo is synthetic (MNIST-1D cannot be built on the GPU machine) with the rung's
exact layout and K (task.param.k), written by benchmarks/scale.py's write_synthetic_zoo. Each design
trains as the train stage trains it (the best generator.train_fraction of the zoo, through the
Generator interface), is saved and loaded onto the device, and samples as the generate stage does:
- flow_pca (generator=flow_pca): the PCA fit and the velocity network, then Euler steps;
- token (benchmarks/scale_quality.py's TOKEN): the token autoencoder, the model-code DDPM and the
  window DDPM, then DDIM over every window of every model.
Each network trains `--steps` steps instead of its default budget. Training runs under
trainer.precision (default bf16 on a GPU: autocast in the plain trainer's forward passes; fp32 on a
CPU); sampling runs as pdiff samples, in fp32 (TF32 on a GPU). A network's s/step is timed between
its first and last logged step, so the first steps' warm-up is not counted; a phase's projection is
its measured time plus the rest of the default budget at that rate. On a GPU all generate.n models
are sampled; on a CPU the defaults shrink (--steps 5, --models 2) so that it ends in minutes, and
generation is projected linearly to generate.n models (an upper bound: flow_pca samples them as one
batch). --set adds overrides (the tests shrink the rung with them); `threads` is honoured as in a
job.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from compose import compose_config
from omegaconf import DictConfig, OmegaConf
from scale import StepClock, per_step, write_synthetic_zoo
from scale_quality import DESIGNS as LADDER_DESIGNS
from table_output import emit

from pdiff.data.mnist1d import CLASSES
from pdiff.data.tasknets import build_task_net
from pdiff.generators import design_class
from pdiff.generators.interface import Conditioning
from pdiff.pipeline.run import usable_threads
from pdiff.training.devices import resolve_device, synchronize
from pdiff.zoo.params import ParamSpec, select_parameters
from pdiff.zoo.store import ParamZoo

RUNG = "experiment=mnist1d_mlp_1e6"
MNIST1D_INPUT = (40,)  # the published MNIST-1D signals' length
# each design's networks: the name it logs under -> its config node (optim, cadence) and its phase
NETWORKS = {
    "flow_pca": {"flow": ("generator", "train_flow")},
    "token": {
        "ae": ("ae", "train_autoencoder"),
        "code": ("denoiser.code", "train_code"),
        "diffusion": ("diffusion", "train_diffusion"),
    },
}
NEVER = 10**9


def rung_spec(cfg: DictConfig) -> ParamSpec:
    """The rung's vector layout: its task network's selected parameters."""
    model = build_task_net(cfg.task.net, MNIST1D_INPUT, CLASSES)
    return select_parameters(
        model, list(cfg.task.param.layers), statistics=cfg.task.param.statistics
    )


def budget_overrides(design: str, steps: int) -> list[str]:
    """`steps` steps for each of the design's networks, logged about 5 times, never checkpointed."""
    log_every = max(1, steps // 5)
    return [
        override
        for node, _ in NETWORKS[design].values()
        for override in (
            f"{node}.optim.steps={steps}",
            f"{node}.optim.warmup_steps=1",
            f"{node}.cadence.log_every={log_every}",
            f"{node}.cadence.save_every={NEVER}",
        )
    ]


class PhaseClock:
    """The generator's phase timer: each phase's seconds since the previous phase ended."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, {}
        self.last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.seconds[phase], self.last = now - self.last, now


def train_phases(
    design: str, cfg: DictConfig, defaults: DictConfig, clock: StepClock, phases: PhaseClock
) -> dict[str, dict]:
    """Each training phase: measured seconds, and for a network its s/step, the steps measured, its
    default budget and the projected seconds of that budget."""
    rows = {phase: {"measured_s": seconds} for phase, seconds in phases.seconds.items()}
    for network, (node, phase) in NETWORKS[design].items():
        steps, full = (int(OmegaConf.select(c, f"{node}.optim.steps")) for c in (cfg, defaults))
        rate = per_step(clock.times[network])
        row = rows[phase]
        row.update(
            s_per_step=rate,
            steps=steps,
            default_steps=full,
            projected_s=row["measured_s"] + (full - steps) * rate,
        )
    for row in rows.values():
        row.setdefault("projected_s", row["measured_s"])
    return rows


def timed_on(device: torch.device, work: Callable[[], object]) -> tuple[object, float]:
    """`work`'s result and its seconds, the device's queued kernels included."""
    synchronize(device)
    started = time.perf_counter()
    result = work()
    synchronize(device)
    return result, time.perf_counter() - started


def measure_design(
    design: str, overrides: list[str], steps: int, models: int, zoo_dir: Path, device: torch.device
) -> dict:
    """Train `design` on the zoo in `zoo_dir` (`steps` steps a network), save, load and sample
    `models` models on `device` (loaded and sampled as the generate stage does): the phases,
    generation and totals, measured and projected."""
    base = [RUNG, *LADDER_DESIGNS[design], *overrides, "paths.output_dir=unused"]
    defaults = compose_config(base)
    cfg = compose_config([*base, *budget_overrides(design, steps)])
    zoo = ParamZoo.load(zoo_dir).best_by_validation(cfg.generator.train_fraction)
    design_type, clock = design_class(cfg), StepClock()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    phases = PhaseClock(device)
    with tempfile.TemporaryDirectory(prefix="pdiff-gpu-rung-") as directory:
        trained = design_type.train(zoo, cfg, Path(directory), clock, phases, device)
        trained.save(Path(directory), {})
        conditioning = Conditioning.from_config(cfg.generate, zoo.val_accuracy)
        params, generate_s = timed_on(
            device,
            lambda: design_type.load(Path(directory), zoo.spec, cfg, device).sample(
                models, cfg.sampler, cfg.seed, conditioning
            ),
        )
    phase_rows = train_phases(design, cfg, defaults, clock, phases)
    train_s = sum(row["measured_s"] for row in phase_rows.values())
    projected_generate_s = generate_s * cfg.generate.n / models
    return {
        "train_rows": zoo.k,
        "phases": phase_rows,
        "generate": {
            "models": models,
            "measured_s": generate_s,
            "target_models": int(cfg.generate.n),
            "projected_s": projected_generate_s,
            "non_finite_models": int((~torch.isfinite(params).all(1)).sum()),
        },
        "train_s": train_s,
        "projected_s": sum(row["projected_s"] for row in phase_rows.values())
        + projected_generate_s,
        "peak_gpu_gb": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
    }


def table_rows(design: str, result: dict) -> list[list]:
    """The design's rows: each phase, generation, and the total."""
    rows = []
    for phase, row in result["phases"].items():
        rate = f"{row['s_per_step']:.4g}" if "s_per_step" in row else "-"
        steps = f"{row['steps']:,} of {row['default_steps']:,}" if "steps" in row else "-"
        name = phase.removeprefix("train_")
        rows.append([design, name, steps, rate, row["measured_s"], row["projected_s"]])
    generate = result["generate"]
    models = f"{generate['models']} of {generate['target_models']}"
    rows.append([design, "generate", models, "-", generate["measured_s"], generate["projected_s"]])
    measured = result["train_s"] + generate["measured_s"]
    rows.append([design, "total", "", "", measured, result["projected_s"]])
    return [[*row[:4], f"{row[4]:.2f}", f"{row[5]:.1f}"] for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--precision", choices=["bf16", "fp32"], help="trainer.precision (default: bf16 on a GPU)"
    )
    parser.add_argument(
        "--steps", type=int, help="training steps per network (default 200 on a GPU, 5 on a CPU)"
    )
    parser.add_argument(
        "--models", type=int, help="models sampled (default generate.n on a GPU, 2 on a CPU)"
    )
    parser.add_argument("--designs", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every design")
    args = parser.parse_args()
    device = resolve_device(args.device, deterministic=False)  # throughput: cudnn autotuning
    on_gpu = device.type == "cuda"
    precision = args.precision or ("bf16" if on_gpu else "fp32")
    steps = args.steps or (200 if on_gpu else 5)
    if steps < 2:
        parser.error(f"--steps {steps}: need at least 2 (the first step is not timed)")
    overrides = [f"trainer.precision={precision}", *args.set]
    rung = compose_config([RUNG, *overrides, "paths.output_dir=unused"])
    models = args.models or (int(rung.generate.n) if on_gpu else 2)
    if rung.threads > 0:  # as a job sets them
        torch.set_num_threads(usable_threads(rung.threads))
    spec = rung_spec(rung)
    result = {
        "device": torch.cuda.get_device_name(device) if on_gpu else "cpu",
        "precision": precision,
        "rung": RUNG,
        "overrides": args.set,
        "D": spec.dim,
        "K": int(rung.task.param.k),
        "steps": steps,
        "designs": {},
    }
    with tempfile.TemporaryDirectory(prefix="pdiff-gpu-rung-zoo-") as scratch:
        zoo_dir = Path(scratch) / "zoo"
        write_synthetic_zoo(zoo_dir, spec, result["K"])
        for design in args.designs:
            result["designs"][design] = measure_design(
                design, overrides, steps, models, zoo_dir, device
            )
    rows = [row for design, each in result["designs"].items() for row in table_rows(design, each)]
    emit(
        f"10^6 rung generators on {result['device']} ({precision}, D={spec.dim:,}, "
        f"K={result['K']})",
        ["design", "phase", "steps/models", "s/step", "measured s", "projected s"],
        rows,
        result,
        args.out,
    )
    for design, each in result["designs"].items():
        peak = f", peak {each['peak_gpu_gb']:.2f} GiB on the GPU" if each["peak_gpu_gb"] else ""
        print(
            f"gpu_rung: {design} projected train + generate {each['projected_s']:.0f} s on "
            f"{result['device']} ({each['generate']['non_finite_models']} non-finite models{peak})"
        )


if __name__ == "__main__":
    main()
