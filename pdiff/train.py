"""One training loop for the autoencoder and the denoiser: each supplies its own loss of a batch."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pdiff import atomic
from pdiff.data import batch_indices
from pdiff.engine import PlainEngine
from pdiff.progress import stage_progress
from pdiff.tracking import Tracker

log = logging.getLogger(__name__)


class EMA:
    """Exponential moving average of a model's weights (the weights diffusion samples from)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_param, param in zip(self.model.parameters(), model.parameters()):
            ema_param.lerp_(param.detach(), 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


def fit(model: nn.Module, loss_of_batch: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor, optim_cfg,
        *, name: str, seed: int, state_path: Path, tracker: Tracker, ema: EMA | None = None) -> float:
    """Train `model` on rows of `data` for optim_cfg.steps; resumable from `state_path`. Returns the last loss."""
    engine = PlainEngine(model, optim_cfg)
    step = 0
    if state_path.is_file():
        state = atomic.read_torch(state_path)
        engine.load_state_dict(state["engine"])
        if ema is not None:
            ema.model.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"])
        step = int(state["step"])
        log.info("%s training resumes at step %d/%d", name, step, optim_cfg.steps)
    model.train()
    batch_size = min(optim_cfg.batch_size, len(data))
    loss_value, started, window_start = float("nan"), time.perf_counter(), step
    with stage_progress(f"train {name}", total=optim_cfg.steps, completed=step) as bar:
        while step < optim_cfg.steps:
            loss = loss_of_batch(data[batch_indices(step, len(data), batch_size, seed)])
            engine.backward(loss)
            engine.step()
            if ema is not None:
                ema.update(model)
            step += 1
            loss_value = float(loss.detach())
            status = None
            if step % optim_cfg.log_every == 0 or step == optim_cfg.steps:
                elapsed = time.perf_counter() - started
                tracker.log({f"{name}/loss": loss_value, f"{name}/lr": engine.lr, f"{name}/step": step,
                             f"{name}/steps_per_s": (step - window_start) / max(elapsed, 1e-9)})
                started, window_start = time.perf_counter(), step
                status = f"loss {loss_value:.4g}"
            bar.advance(status=status)
            if step % optim_cfg.save_every == 0 and step < optim_cfg.steps:
                state = {"engine": engine.state_dict(), "rng": torch.get_rng_state(), "step": step}
                if ema is not None:
                    state["ema"] = ema.model.state_dict()
                atomic.write_torch(state_path, state)
    model.eval()
    return loss_value
