"""The DeepSpeed engine (ZeRO 0-3, gradient accumulation, clipping, bf16/fp16, CPU offload) on any
number of ranks; its JSON config is built from the `trainer` config node in `deepspeed_config` and
nowhere else."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from pdiff import atomic
from pdiff.config import Precision, TrainerName
from pdiff.errors import ConfigError
from pdiff.training.engine import Engine, check_layout, lr_schedule, memory_split, record_layout

LATEST = "latest.json"
DTYPES = {
    Precision.fp32: torch.float32,
    Precision.bf16: torch.bfloat16,
    Precision.fp16: torch.float16,
}


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
            record_layout(directory, self.layout)
            atomic.write_json(directory / LATEST, {"tag": tag, "step": step})
            tags = sorted(p.name for p in directory.glob("step*") if p.is_dir())
            for old in tags[: -self.keep]:
                shutil.rmtree(directory / old, ignore_errors=True)
        dist.barrier()

    def load(self, directory: Path) -> tuple[int, dict[str, torch.Tensor]] | None:
        check_layout(directory, self.layout)
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
