"""One training loop for the autoencoder and the denoiser, on one process or many ranks, and the
choice of the engine it drives (plain or DeepSpeed, by the trainer config).

Each step takes a global batch of zoo rows (a permutation per epoch, set by the seed), and each rank
reads only its own slice of it, split again into `trainer.grad_accum` micro-batches. Noise is drawn
for the global batch and sliced the same way, so the run does not depend on the number of ranks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pdiff.config import TrainerName
from pdiff.diffusion.noise import BatchNoise
from pdiff.errors import ConfigError, TrainingDiverged
from pdiff.tracking import Tracker, stage_progress
from pdiff.training import distributed
from pdiff.training.batches import batch_indices
from pdiff.training.deepspeed_engine import DeepSpeedEngine
from pdiff.training.engine import Engine
from pdiff.training.plain_engine import PlainEngine

log = logging.getLogger(__name__)
LossOfBatch = Callable[[Callable[..., torch.Tensor], torch.Tensor, BatchNoise], torch.Tensor]


class EMA:
    """Exponential moving average of this rank's parameter values (partitions under ZeRO-3)."""

    def __init__(self, engine, decay: float):
        self.engine, self.decay = engine, decay
        self.shadow = [p.detach().float().clone() for p in engine.local_parameters()]

    @torch.no_grad()
    def update(self) -> None:
        for shadow, param in zip(self.shadow, self.engine.local_parameters()):
            shadow.lerp_(param.float(), 1.0 - self.decay)

    def state(self) -> dict[str, torch.Tensor]:
        return {f"ema.{index}": tensor for index, tensor in enumerate(self.shadow)}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        for index, shadow in enumerate(self.shadow):
            shadow.copy_(state[f"ema.{index}"])

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return self.engine.full_state_dict(self.shadow)


@dataclass
class Fitted:
    """Full fp32 weights after training (on every rank), the EMA weights when kept, and the last
    loss."""

    weights: dict[str, torch.Tensor]
    ema_weights: dict[str, torch.Tensor] | None
    last_loss: float


def check_finite(finite: bool, what: str, name: str, step: int, knob: str, lr: float) -> None:
    if not finite:
        raise TrainingDiverged(
            f"{name} training diverged: {what} at step {step}; nothing was saved as trained. "
            f"Lower {knob}.lr (it is {lr:g} at this step) or raise {knob}.warmup_steps"
        )


def global_batch_size(requested: int, rows: int, parts: int) -> int:
    """The batch actually used: at most the zoo, and a multiple of ranks x micro-batches."""
    size = min(requested, rows) // parts * parts
    if size < 1:
        raise ConfigError(
            f"a global batch of min(batch_size={requested}, zoo rows={rows}) cannot be split into "
            f"{parts} equal micro-batches (ranks x trainer.grad_accum); use fewer ranks or grad_accum"
        )
    return size


def take_rows(data, rows: torch.Tensor, dtype: torch.dtype, device: torch.device):
    """Rows of a tensor, or of a row source with `take(rows, dtype, device)` (zoo tokens read on
    demand), on device."""
    if isinstance(data, torch.Tensor):
        return data[rows].to(device=device, dtype=dtype)
    return data.take(rows, dtype, device)


def build_engine(
    model: nn.Module,
    optim_cfg,
    trainer_cfg,
    micro_batch: int,
    world_size: int,
    device: torch.device | None = None,
    compile_forward: bool = False,
) -> Engine:
    """The trainer's engine for `model` on `device` (the CPU when not given); the plain one may
    compile."""
    device = torch.device("cpu") if device is None else device
    if TrainerName(trainer_cfg.name) is TrainerName.deepspeed:
        return DeepSpeedEngine(model, optim_cfg, trainer_cfg, micro_batch, world_size, device)
    return PlainEngine(model, optim_cfg, trainer_cfg, device, compile_forward)


def fit(
    model: nn.Module,
    loss_of_batch: LossOfBatch,
    data,
    optim_cfg,
    cadence_cfg,
    trainer_cfg,
    *,
    name: str,
    seed: int,
    checkpoint_dir: Path,
    tracker: Tracker,
    knob: str | None = None,
    ema_decay: float | None = None,
    device: torch.device | None = None,
    compile_forward: bool = False,
) -> Fitted:
    """Train `model` on rows of `data` (a tensor or a row source) for optim_cfg.steps on `device`;
    resumable.

    Logs every cadence_cfg.log_every steps and writes a resume point every cadence_cfg.save_every
    (the only host syncs). A non-finite loss at either stops training with TrainingDiverged naming
    `knob` (the config path of optim_cfg; by default NAME.optim), before anything is saved. The
    returned weights are on the CPU.
    """
    knob = knob or f"{name}.optim"
    env = distributed.detect()
    parts = env.world_size * trainer_cfg.grad_accum
    batch_size = global_batch_size(optim_cfg.batch_size, len(data), parts)
    micro = batch_size // parts
    if batch_size != min(optim_cfg.batch_size, len(data)):
        log.info(
            "%s: global batch %d (a multiple of %d ranks x %d micro-batches)",
            name,
            batch_size,
            env.world_size,
            trainer_cfg.grad_accum,
        )
    engine = build_engine(
        model, optim_cfg, trainer_cfg, micro, env.world_size, device, compile_forward
    )
    ema = EMA(engine, ema_decay) if ema_decay is not None else None
    step = 0
    resumed = engine.load(checkpoint_dir)
    if resumed is not None:
        step, extra = resumed
        if ema is not None:
            ema.load(extra)
        log.info("%s training resumes at step %d/%d", name, step, optim_cfg.steps)
    tracker.rewind(
        name, step
    )  # rows an interrupted attempt logged after its last resume point (or before any)
    engine.module.train()
    loss_value, started, window_start = float("nan"), time.perf_counter(), step
    with stage_progress(
        f"train {name}", total=optim_cfg.steps, completed=step, visible=env.is_main
    ) as bar:
        while step < optim_cfg.steps:
            indices = batch_indices(step, len(data), batch_size, seed)
            losses = []
            for part in range(trainer_cfg.grad_accum):
                first = (env.rank * trainer_cfg.grad_accum + part) * micro
                rows = slice(first, first + micro)
                batch = take_rows(data, indices[rows], engine.dtype, engine.device)
                noise = BatchNoise(seed, step, batch_size, rows, engine.dtype, engine.device)
                loss = loss_of_batch(engine, batch, noise)
                engine.backward(loss)
                engine.step()
                losses.append(loss.detach())
            if ema is not None:
                ema.update()
            step += 1
            status = None
            logs = step % cadence_cfg.log_every == 0 or step == optim_cfg.steps
            saves = step % cadence_cfg.save_every == 0
            if logs or saves:
                loss_value = sum(float(loss) for loss in losses) / len(losses)
                loss_value = distributed.mean_across_ranks({"loss": loss_value})["loss"]
                check_finite(
                    math.isfinite(loss_value), f"loss {loss_value}", name, step, knob, engine.lr
                )
            if logs:
                elapsed = time.perf_counter() - started
                steps_per_s = (step - window_start) / max(elapsed, 1e-9)
                tracker.log(
                    {
                        f"{name}/loss": loss_value,
                        f"{name}/lr": engine.lr,
                        f"{name}/step": step,
                        f"{name}/steps_per_s": steps_per_s,
                        f"{name}/samples_per_s": steps_per_s * batch_size,
                    }
                )
                started, window_start = time.perf_counter(), step
                status = f"loss {loss_value:.4g}"
            bar.advance(status=status)
            if saves and step < optim_cfg.steps:
                engine.save(checkpoint_dir, step, ema.state() if ema is not None else {})
    engine.module.eval()
    weights = _on_cpu(engine.full_state_dict())
    ema_weights = _on_cpu(ema.full_state_dict()) if ema is not None else None
    for state in (weights, ema_weights or {}):
        finite = all(
            bool(torch.isfinite(tensor).all())
            for tensor in state.values()
            if tensor.is_floating_point()
        )
        check_finite(finite, "the weights are not finite", name, step, knob, engine.lr)
    return Fitted(weights, ema_weights, loss_value)


def _on_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.cpu() for name, tensor in state.items()}
