"""One short generator training (TRAIN) that several launches repeat, and how their results are
compared."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load_file

from pdiff.pipeline.output_dir import mark_made_by_pdiff

TRAIN = (
    "experiment=smoke",
    "task=digits_cnn",
    "ae.optim.steps=200",
    "ae.cadence.save_every=50",
    "diffusion.optim.steps=100",
    "diffusion.cadence.save_every=50",
)
WEIGHTS = ("autoencoder.safetensors", "denoiser.safetensors", "denoiser_ema.safetensors")


def copy_zoo(zoo_run: Path, dest: Path) -> Path:
    """A new run folder `dest` holding only `zoo_run`'s collected zoo (what stage=train reads),
    marked as pdiff's."""
    dest.mkdir(parents=True)
    mark_made_by_pdiff(dest)
    shutil.copytree(zoo_run / "zoo", dest / "zoo")
    shutil.copy(zoo_run / "timings.json", dest / "timings.json")
    return dest


def losses(run_dir: Path) -> dict[tuple[str, int], float]:
    """Every logged training loss of a run, by (network, step)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for name in ("ae", "code", "diffusion"):
            if f"{name}/loss" in row:
                out[(name, row[f"{name}/step"])] = row[f"{name}/loss"]
    return out


def max_weight_diff(a: Path, b: Path, names: tuple[str, ...] = WEIGHTS) -> float:
    """The largest absolute difference between two runs' generator weights."""
    diffs = []
    for name in names:
        left, right = load_file(a / "generator" / name), load_file(b / "generator" / name)
        assert left.keys() == right.keys()
        diffs += [float((left[k] - right[k]).abs().max()) for k in left]
    return max(diffs)
