"""The plain engine: one model in one process, torch AdamW with the shared schedule, gradient
accumulation and clipping, bf16 autocast, its state in one file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pdiff import atomic
from pdiff.config import Precision, TrainerName
from pdiff.training.devices import autocast
from pdiff.training.engine import Engine, check_layout, lr_schedule, memory_split, record_layout

PLAIN_STATE = "plain_state.pt"


class PlainEngine(Engine):
    """AdamW with warm-up + cosine schedule and gradient clipping for one model in one process."""

    dtype = torch.float32

    def __init__(
        self,
        model: nn.Module,
        optim_cfg,
        trainer_cfg,
        device: torch.device,
        compile_forward: bool = False,
    ):
        self.device, self.precision = device, Precision(trainer_cfg.precision)
        self.module, self.grad_clip, self.accumulation = (
            model.to(device),
            trainer_cfg.grad_clip,
            trainer_cfg.grad_accum,
        )
        self.forward = (
            torch.compile(self.module) if compile_forward else self.module
        )  # shares the parameters
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay
        )
        self.schedule = lr_schedule(self.optimizer, optim_cfg)
        self._micro_steps = 0
        self.layout = {
            "trainer": TrainerName.plain.value,
            "grad_accum": self.accumulation,
            "precision": self.precision.value,
        }

    def __call__(self, *args, **kwargs):
        """The module's output in fp32; the forward under bf16 autocast when trainer.precision=bf16."""
        with autocast(self.device, self.precision):
            out = self.forward(*args, **kwargs)
        return out.float()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accumulation).backward()

    def step(self) -> None:
        """One micro-batch done; the optimiser steps after `grad_accum` of them."""
        self._micro_steps += 1
        if self._micro_steps % self.accumulation:
            return
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)

    def local_parameters(self) -> list[torch.Tensor]:
        return [p.detach() for p in self.module.parameters()]

    def consolidate(self, local: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Full named tensors from values shaped like local_parameters() (here: the same tensors)."""
        names = [name for name, _ in self.module.named_parameters()]
        return {name: tensor.detach().clone() for name, tensor in zip(names, local)}

    def memory_bytes(self) -> dict[str, int]:
        return memory_split(list(self.module.parameters()), self.optimizer)

    def save(self, directory: Path, step: int, extra: dict[str, torch.Tensor]) -> None:
        """Everything to resume (the layout was checked by load(), which fit() always calls first)."""
        directory.mkdir(parents=True, exist_ok=True)
        record_layout(directory, self.layout)
        atomic.write_torch(
            directory / PLAIN_STATE,
            {
                "model": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "step": step,
                "extra": extra,
            },
        )

    def load(self, directory: Path) -> tuple[int, dict[str, torch.Tensor]] | None:
        """(step, extra) of the last checkpoint in `directory`, restored into this engine; None if
        none."""
        check_layout(directory, self.layout)
        if not (directory / PLAIN_STATE).is_file():
            return None
        state = atomic.read_torch(directory / PLAIN_STATE)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        return int(state["step"]), state["extra"]
