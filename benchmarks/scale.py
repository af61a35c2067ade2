"""Training cost against vector size: pdiff's token design vs the original-style conv autoencoder.

    python benchmarks/scale.py --out FILE.json [--dims 1e4 1e5 1e6 1e7] [--steps 10] [--timeout 600]

For each D a synthetic zoo (K=16, tensors of at most 2^20 values, like a network's layers) is
written as a real zoo on disk. Each (design, D) then runs in its own process, through pdiff's own
code:
- token (`generator=token`): per-tensor normaliser from the memory-mapped zoo, `--steps` steps of
  the token autoencoder, the latents of every token, `--steps` steps of the window denoiser;
- pdiff_v1 (`ae=pdiff_v1`, p-diff's conv autoencoder): per-tensor normaliser, `--steps` autoencoder
  steps on a batch of all 16 vectors, then `--steps` steps of the latent denoiser.
Both train through the Generator interface (Generator.train), as the pipeline does. s_per_step is
the autoencoder's steady-state step time (the first step is not counted). Peak RSS is the process's
high-water mark; bytes_per_param is (peak - RSS after imports) / D, and marginal_bytes_per_param the
extra peak per extra parameter from the previous size (what grows with D). With generator=token the
denoiser takes 32 windows (2,048 token latents) per step, as docs/large_models.md advises. A process
above --rss-limit-gb is stopped and recorded as "oom", one over --timeout as "timeout".
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil
import torch
from compose import compose_config
from table_output import emit

from pdiff import atomic
from pdiff.generators import design_class
from pdiff.training.devices import resolve_device
from pdiff.zoo.params import ParamEntry, ParamSpec
from pdiff.zoo.store import ParamZoo, run_path

DESIGN_OVERRIDES = {  # each measured design as the config a user selects
    # 32 windows of 64 token latents per step; the model codes' denoiser gets the same step budget
    # as the others
    "token": [
        "generator=token",
        "diffusion.optim.batch_size=32",
        "denoiser.code.cadence.save_every=1000000000",
    ],
    "pdiff_v1": ["generator=latent", "ae=pdiff_v1"],
}
DESIGNS = tuple(DESIGN_OVERRIDES)
K = 16
MAX_TENSOR = 2**20
GIB = 2**30
OOM_SIGNS = ("can't allocate memory", "out of memory", "MemoryError")


def peak_rss() -> int:
    """This process's resident high-water mark in bytes (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def chunked_spec(dim: int) -> ParamSpec:
    """D values as tensors of at most MAX_TENSOR values (like a network's layers)."""
    sizes = [MAX_TENSOR] * (dim // MAX_TENSOR) + ([dim % MAX_TENSOR] if dim % MAX_TENSOR else [])
    offsets = [sum(sizes[:index]) for index in range(len(sizes))]
    return ParamSpec(
        tuple(
            ParamEntry(f"layer{index}.weight", (size,), offset)
            for index, (size, offset) in enumerate(zip(sizes, offsets))
        )
    )


def write_synthetic_zoo(directory: Path, spec: ParamSpec, k: int = K, seed: int = 0) -> None:
    """k vectors laid out as `spec`, near a common centre (a zoo's shape), written as a real zoo."""
    generator = torch.Generator().manual_seed(seed)
    centre = torch.randn(spec.dim, generator=generator) * 0.05
    vectors = centre + 0.01 * torch.randn(k, spec.dim, generator=generator)
    collected = run_path(directory, 0, 1)
    accuracy = torch.full((k,), 50.0, dtype=torch.float64)
    atomic.write_safetensors(collected, {"params": vectors, "val_accuracy": accuracy})
    ParamZoo.merge(directory, [collected], spec, {"synthetic": True})


class StepClock:
    """A tracker that keeps (step, time) of every logged training step, per network (the prefix of
    its `<network>/loss` metric: "ae", "code", "diffusion", "flow")."""

    def __init__(self):
        self.times: defaultdict[str, list[tuple[int, float]]] = defaultdict(list)
        self.values: dict = {}

    def log(self, metrics: dict) -> None:
        now = time.perf_counter()
        for key in metrics:
            if key.endswith("/loss"):
                network = key.removesuffix("/loss")
                self.times[network].append((metrics[f"{network}/step"], now))
        self.values.update(metrics)

    def rewind(self, phase: str, step: int) -> None:
        """Nothing to drop: each measurement starts from an empty clock."""


def per_step(times: list[tuple[int, float]]) -> float:
    """Seconds per step between the first and the last logged step (the first is not counted)."""
    (first_step, first_time), (last_step, last_time) = times[0], times[-1]
    return (last_time - first_time) / max(last_step - first_step, 1)


def worker(design: str, zoo_dir: Path, steps: int) -> dict:
    """One (design, D) measurement in this process, through the Generator interface; returns the
    row."""
    baseline = peak_rss()
    cadence = [
        "ae.cadence.log_every=1",
        "diffusion.cadence.log_every=1",
        f"ae.cadence.save_every={10**9}",
        f"diffusion.cadence.save_every={10**9}",
    ]
    budget = [
        f"ae.optim.steps={steps}",
        f"diffusion.optim.steps={steps}",
        "ae.optim.warmup_steps=1",
        "diffusion.optim.warmup_steps=1",
    ]
    own = (
        [f"denoiser.code.optim.steps={steps}", "denoiser.code.optim.warmup_steps=1"]
        if design == "token"
        else []
    )
    cfg = compose_config(
        [*DESIGN_OVERRIDES[design], *cadence, *budget, *own, "paths.output_dir=unused"]
    )
    zoo = ParamZoo.load(zoo_dir)
    clock, started = StepClock(), time.perf_counter()
    generator = design_class(cfg).train(
        zoo,
        cfg,
        Path(tempfile.mkdtemp(prefix="pdiff-scale-")),
        clock,
        lambda phase: None,
        resolve_device(cfg.device),
    )
    peak = peak_rss()
    row = {
        "first_step_s": round(clock.times["ae"][0][1] - started, 3),
        "s_per_step": round(per_step(clock.times["ae"]), 4),
        "diffusion_s_per_step": round(per_step(clock.times["diffusion"]), 4),
        "peak_rss_gb": round(peak / GIB, 3),
        "bytes_per_param": round((peak - baseline) / zoo.spec.dim, 1),
        "generator_params": generator.parameter_count(),
    }
    if "ae/encode_s" in clock.values:
        row["encode_s"] = round(clock.values["ae/encode_s"], 2)
    if "tokens" in generator.meta:
        row["tokens"] = generator.meta["tokens"]
    return row


def measure(
    design: str, zoo_dir: Path, dim: int, steps: int, timeout: float, rss_limit: float
) -> dict:
    """Run the worker in a child process, watching its memory and time."""
    row = {"design": design, "D": dim}
    command = [
        sys.executable,
        __file__,
        "--worker",
        design,
        "--zoo",
        str(zoo_dir),
        "--steps",
        str(steps),
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process, started, peak, status = psutil.Process(child.pid), time.perf_counter(), 0, None
    while child.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if peak > rss_limit * GIB:
            status = "oom"
        elif time.perf_counter() - started > timeout:
            status = "timeout"
        if status:
            child.kill()
            child.wait()
            return {
                **row,
                "s_per_step": None,
                "peak_rss_gb": round(peak / GIB, 3),
                "status": status,
            }
        time.sleep(0.05)
    out, err = child.communicate()
    if child.returncode != 0:
        killed = child.returncode in (-9, 137) or any(sign in err for sign in OOM_SIGNS)
        return {
            **row,
            "s_per_step": None,
            "peak_rss_gb": round(peak / GIB, 3),
            "status": "oom" if killed else "error",
            "error": err.strip().splitlines()[-1] if err.strip() else f"exit {child.returncode}",
        }
    return {**row, **json.loads(out.strip().splitlines()[-1]), "status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--dims", type=float, nargs="+", default=[1e4, 1e5, 1e6, 1e7])
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per (design, D)")
    parser.add_argument(
        "--rss-limit-gb", type=float, default=20.0, help="stop a run above this resident memory"
    )
    parser.add_argument("--worker", choices=DESIGNS, help=argparse.SUPPRESS)
    parser.add_argument("--zoo", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.zoo, args.steps)))
        return
    if args.out is None:
        parser.error("--out FILE.json is required")
    if args.steps < 2:
        parser.error(f"--steps {args.steps}: need at least 2 (the first step is not timed)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pdiff-scale-zoo-") as scratch:
        for dim in (int(d) for d in args.dims):
            zoo_dir = Path(scratch) / f"zoo_{dim}"
            write_synthetic_zoo(zoo_dir, chunked_spec(dim))
            for design in args.designs:
                rows.append(
                    measure(design, zoo_dir, dim, args.steps, args.timeout, args.rss_limit_gb)
                )
                print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(zoo_dir)
    add_marginal_cost(rows)
    columns = [
        "design",
        "D",
        "status",
        "s_per_step",
        "peak_rss_gb",
        "bytes_per_param",
        "marginal_bytes_per_param",
    ]
    emit(
        f"training cost vs D (K={K}, {args.steps} steps, {torch.get_num_threads()} threads)",
        columns,
        [
            [row.get(column, "-") if row.get(column) is not None else "-" for column in columns]
            for row in rows
        ],
        rows,
        args.out,
    )
    token = [row for row in rows if row["design"] == "token" and row["status"] == "ok"]
    marginal = [
        row["marginal_bytes_per_param"] for row in token if row.get("marginal_bytes_per_param")
    ]
    spread = (
        f"{max(marginal) / min(marginal):.2f}x"
        if len(marginal) > 1 and min(marginal) > 0
        else "n/a"
    )
    print(
        f"scale: token design trains up to D={token[-1]['D']:,} ({len(token)} sizes ok); marginal bytes per "
        f"parameter spread {spread}"
        if token
        else "scale: the token design trained no size"
    )


def add_marginal_cost(rows: list[dict]) -> None:
    """Per design, the extra peak memory per extra parameter from the previous successful size."""
    for design in DESIGNS:
        done = [row for row in rows if row["design"] == design and row["status"] == "ok"]
        for previous, row in zip(done, done[1:]):
            extra = (row["peak_rss_gb"] - previous["peak_rss_gb"]) * GIB
            row["marginal_bytes_per_param"] = round(extra / (row["D"] - previous["D"]), 1)


if __name__ == "__main__":
    main()
