"""The optimisation engines behind one interface: forward (call), backward, step, save, load, full
weights.

`PlainEngine` is one process with torch AdamW. `DeepSpeedEngine` is DeepSpeed (ZeRO 0-3, gradient
accumulation, clipping, bf16/fp16, CPU offload) on any number of ranks; its JSON config is built
from the `trainer` config node in `deepspeed_config` and nowhere else. Both use AdamW with the same
warm-up + cosine schedule, so one rank of plain and N ranks of DeepSpeed follow the same curve.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from pdiff import atomic
from pdiff.config import Precision, TrainerName
from pdiff.errors import ConfigError
from pdiff.training.devices import autocast

log = logging.getLogger(__name__)
PLAIN_STATE = "plain_state.pt"
LATEST = "latest.json"
DTYPES = {
    Precision.fp32: torch.float32,
    Precision.bf16: torch.bfloat16,
    Precision.fp16: torch.float16,
}


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


def deepspeed_config(
    trainer_cfg, optim_cfg, micro_batch: int, world_size: int, on_gpu: bool = False
) -> dict:
    """The DeepSpeed JSON for this trainer node, optimiser and batch layout (pinned offload memory
    on a GPU)."""
    precision = Precision(trainer_cfg.precision)
    zero: dict = {"stage": int(trainer_cfg.zero_stage)}
    if trainer_cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if trainer_cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    return {
        "train_batch_size": micro_batch * world_size * trainer_cfg.grad_accum,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": trainer_cfg.grad_accum,
        "gradient_clipping": trainer_cfg.grad_clip,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": optim_cfg.lr,
                "weight_decay": optim_cfg.weight_decay,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "torch_adam": True,
            },
        },
        "zero_optimization": zero,
        "zero_force_ds_cpu_optimizer": False,  # torch AdamW also with offload: no C++ build, same maths
        "bf16": {"enabled": precision is Precision.bf16},
        "fp16": {"enabled": precision is Precision.fp16},
        "steps_per_print": 1_000_000_000,
        "wall_clock_breakdown": False,
    }


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


def _record_layout(directory: Path, layout: dict) -> None:
    if not (directory / "trainer.json").is_file():
        atomic.write_json(directory / "trainer.json", layout)


def _check_layout(directory: Path, layout: dict) -> None:
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
        _record_layout(directory, self.layout)
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
        _check_layout(directory, self.layout)
        if not (directory / PLAIN_STATE).is_file():
            return None
        state = atomic.read_torch(directory / PLAIN_STATE)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        return int(state["step"]), state["extra"]


class WeightsOnlyLoads:
    """DeepSpeed's checkpoint engine, with every load through torch.load(weights_only=True).

    DeepSpeed itself unpickles its checkpoints; these hold tensors, containers and three DeepSpeed
    types, which are the only classes allowed here.
    """

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def load(self, path: str, map_location=None):
        from deepspeed.runtime.fp16.loss_scaler import LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        with torch.serialization.safe_globals([LossScaler, ZeroStageEnum, fragment_address]):
            return torch.load(path, map_location=map_location, weights_only=True)


class DeepSpeedEngine(Engine):
    """A DeepSpeed engine on the current process group (started beforehand by
    pdiff.training.distributed.start)."""

    def __init__(
        self,
        model: nn.Module,
        optim_cfg,
        trainer_cfg,
        micro_batch: int,
        world_size: int,
        device: torch.device,
    ):
        if device.type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed
        import deepspeed.ops

        # DeepSpeed's communication start compiles its shared-memory all-reduce (a C++ op, built at
        # first use into ~/.cache/torch_extensions), which only inference_all_reduce uses, never
        # training. Marked incompatible it is not built: no compiler run, nothing cached in $HOME,
        # and no build that fails where the checkout's path holds a space (torch's ninja files leave
        # paths unquoted).
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        self.config = deepspeed_config(
            trainer_cfg, optim_cfg, micro_batch, world_size, on_gpu=device.type == "cuda"
        )
        self.engine, self.optimizer, _, self.schedule = deepspeed.initialize(
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=self.config,
            lr_scheduler=lambda optimizer: lr_schedule(optimizer, optim_cfg),
        )
        self.engine.checkpoint_engine = WeightsOnlyLoads(self.engine.checkpoint_engine)
        self.module = self.engine.module
        self.device = self.engine.device  # DeepSpeed moved the module to its rank's accelerator
        self.zero_stage = int(trainer_cfg.zero_stage)
        self.dtype = DTYPES[Precision(trainer_cfg.precision)]
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.keep = trainer_cfg.keep_checkpoints
        self.layout = {
            "trainer": TrainerName.deepspeed.value,
            "zero_stage": self.zero_stage,
            "world_size": self.world_size,
            "grad_accum": trainer_cfg.grad_accum,
            "precision": Precision(trainer_cfg.precision).value,
        }

    def __call__(self, *args, **kwargs):
        return self.engine(*args, **kwargs)

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    def local_parameters(self) -> list[torch.Tensor]:
        """This rank's values of each parameter: a flat partition under ZeRO-3, the whole tensor
        otherwise."""
        if self.zero_stage == 3:
            return [p.ds_tensor.detach() for p in self.module.parameters()]
        return [p.detach() for p in self.module.parameters()]

    def consolidate(self, local: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Full fp32 named tensors, on every rank, from values shaped like local_parameters()."""
        out = {}
        for (name, param), part in zip(self.module.named_parameters(), local):
            part = part.detach().float().contiguous()
            if self.zero_stage == 3:
                pieces = [torch.empty_like(part) for _ in range(self.world_size)]
                dist.all_gather(pieces, part)
                out[name] = torch.cat(pieces)[: param.ds_numel].view(param.ds_shape).clone()
            else:
                out[name] = part.clone()
        return out

    def memory_bytes(self) -> dict[str, int]:
        """This rank's bytes of parameters (its partitions under ZeRO-3) and of optimiser state +
        fp32 masters."""
        return memory_split(
            self.local_parameters(), getattr(self.optimizer, "optimizer", self.optimizer)
        )

    def save(self, directory: Path, step: int, extra: dict[str, torch.Tensor]) -> None:
        """A DeepSpeed checkpoint (every rank writes its part), this rank's `extra`, then the
        pointer to it."""
        directory.mkdir(parents=True, exist_ok=True)
        tag = f"step{step:08d}"
        self.engine.save_checkpoint(
            str(directory), tag=tag, client_state={"step": step}, save_latest=False
        )
        atomic.write_safetensors(
            directory / tag / f"pdiff_extra_rank{self.rank}.safetensors", extra
        )
        dist.barrier()
        if self.rank == 0:
            _record_layout(directory, self.layout)
            atomic.write_json(directory / LATEST, {"tag": tag, "step": step})
            tags = sorted(p.name for p in directory.glob("step*") if p.is_dir())
            for old in tags[: -self.keep]:
                shutil.rmtree(directory / old, ignore_errors=True)
        dist.barrier()

    def load(self, directory: Path) -> tuple[int, dict[str, torch.Tensor]] | None:
        _check_layout(directory, self.layout)
        if not (directory / LATEST).is_file():
            return None
        latest = json.loads((directory / LATEST).read_text())
        path, client_state = self.engine.load_checkpoint(str(directory), tag=latest["tag"])
        if path is None:
            raise ConfigError(
                f"DeepSpeed could not load checkpoint {latest['tag']} from {directory}"
            )
        extra = atomic.read_safetensors(
            directory / latest["tag"] / f"pdiff_extra_rank{self.rank}.safetensors"
        )
        return int(client_state["step"]), extra


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
