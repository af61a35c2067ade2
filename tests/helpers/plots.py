"""What a run drew and logged: saturated pixels in each panel of a plot, and the losses of each
training phase."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib import image


def _coloured(path: Path) -> np.ndarray:
    """[H, W] True where the PNG's pixel is saturated colour: data drawn in matplotlib's palette,
    not the black, grey and white of axes, ticks and text."""
    rgb = image.imread(path)[..., :3]
    return (rgb.max(-1) - rgb.min(-1)) > 0.25


def assert_plot_drawn(path: Path, panels: int = 1, min_fraction: float = 1e-3) -> None:
    """The PNG shows data in each of its `panels` side-by-side panels: an empty axes (or a blank
    figure) has no saturated pixels, a curve or markers have thousands."""
    coloured = _coloured(path)
    width = coloured.shape[1]
    strips = [
        coloured[:, i * width // panels : (i + 1) * width // panels].mean() for i in range(panels)
    ]
    assert all(fraction > min_fraction for fraction in strips), (path.name, strips)


def logged_losses(out: Path, phase: str) -> list[tuple[int, float]]:
    """(step, loss) of each metrics.jsonl row of a training phase (the `name` of
    pdiff.training.fit.fit)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(row[f"{phase}/step"], row[f"{phase}/loss"]) for row in rows if f"{phase}/loss" in row]


def assert_training_logged_and_plotted(out: Path, phases: dict[str, str]) -> None:
    """Every training phase of the design logged finite losses at increasing steps, and has its
    drawn panel."""
    assert phases, "the design declares no training phase"
    for phase in phases:
        logged = logged_losses(out, phase)
        steps = [step for step, _ in logged]
        assert len(logged) >= 2 and steps == sorted(set(steps)), (phase, logged)
        assert all(math.isfinite(loss) and loss >= 0 for _, loss in logged), (phase, logged)
    assert_plot_drawn(out / "training_curves.png", panels=len(phases))
