"""The one interface of the optimisation engines (forward (call), backward, step, save, load, full
weights) and what both engines share: the warm-up + cosine schedule, the memory split, the checkpoint
layout record.

`plain_engine.PlainEngine` is one process with torch AdamW; `deepspeed_engine.DeepSpeedEngine` is
DeepSpeed on any number of ranks. Both use AdamW with the same schedule, so one rank of plain and N
ranks of DeepSpeed follow the same curve; `fit.build_engine` picks one for the trainer config.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from pdiff import atomic
from pdiff.errors import ConfigError


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR multiplier: linear warm-up, then cosine decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def lr_schedule(optimizer: torch.optim.Optimizer, optim_cfg) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(min(optim_cfg.warmup_steps, optim_cfg.steps), optim_cfg.steps)
    )


def _storages(tensors) -> dict[int, int]:
    """{address: bytes} of the distinct storages behind `tensors` (views of one buffer count once)."""
    return {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for t in tensors
        if isinstance(t, torch.Tensor) and t.numel() > 0
    }


def memory_split(params, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of this rank's parameters, and of the optimiser's state + master copies not shared with
    them."""
    param_storages = _storages(params)
    masters = [p for group in optimizer.param_groups for p in group["params"]]
    states = [t for state in optimizer.state.values() for t in state.values()]
    extra = {k: v for k, v in _storages(masters + states).items() if k not in param_storages}
    return {"params": sum(param_storages.values()), "optimizer": sum(extra.values())}


def record_layout(directory: Path, layout: dict) -> None:
    if not (directory / "trainer.json").is_file():
        atomic.write_json(directory / "trainer.json", layout)


def check_layout(directory: Path, layout: dict) -> None:
    """ConfigError if the checkpoints in `directory` were written by another trainer layout."""
    path = directory / "trainer.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != layout:
            raise ConfigError(
                f"{directory} holds a checkpoint written with {saved}, but this run is {layout}; "
                "resume with the same trainer settings and number of ranks, or delete that folder "
                "to restart this training from step 0"
            )


class Engine(ABC):
    """What both engines share: the full state dict built from their own
    local_parameters/consolidate."""

    module: nn.Module

    @abstractmethod
    def local_parameters(self) -> list[torch.Tensor]:
        """This rank's parameter tensors (its partitions under ZeRO-3)."""

    @abstractmethod
    def consolidate(self, local: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Full fp32 weights by name from tensors shaped like local_parameters()."""

    def full_state_dict(self, local: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Full weights (fp32) and buffers on every rank, from `local` (like local_parameters()) or
        the model's own."""
        weights = self.consolidate(self.local_parameters() if local is None else local)
        buffers = {
            name: b.detach().float().clone() if b.is_floating_point() else b.detach().clone()
            for name, b in self.module.named_buffers()
        }
        return {**weights, **buffers}
