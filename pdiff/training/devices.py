"""The one place that decides where a process computes: `device=auto|cpu|cuda`, resolved inside the
job.

A rank's GPU is its local rank modulo the visible GPUs (one GPU per task, or all of a node's visible
to each task). On a GPU, TF32 matrix products and cudnn's autotuner are turned on. Everything else
in pdiff receives the resolved device; random draws stay on seeded CPU generators and are moved to
it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from pdiff.config import DeviceName, Precision
from pdiff.errors import ConfigError


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(
    name: DeviceName | str, local_rank: int = 0, deterministic: bool = True
) -> torch.device:
    """The device of this process; ConfigError naming `device` when device=cuda and no GPU is
    visible.

    On a GPU, `deterministic` asks for deterministic kernels (cudnn, cuBLAS), so that a resumed run
    ends bit-identical to an uninterrupted one; without it cudnn autotunes (faster, run-to-run
    differences).
    """
    name = DeviceName(name)
    if name is DeviceName.cpu:
        return torch.device("cpu")
    if not cuda_available():
        if name is DeviceName.cuda:
            raise ConfigError(
                "device=cuda is invalid: this job sees no CUDA GPU (torch.cuda.is_available() is "
                "False); use device=auto or device=cpu, or run the job on a GPU node"
            )
        return torch.device("cpu")
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = (
        not deterministic
    )  # fixed-shape convnets: time the kernels, keep the fastest
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS first starts
        torch.use_deterministic_algorithms(
            True, warn_only=True
        )  # ops without a deterministic kernel warn
    return device


def check_precision(trainer_cfg, device: torch.device) -> None:
    """fp16 needs a CUDA GPU: checked in the job, where it runs (a GPU-less login node may submit
    it)."""
    if Precision(trainer_cfg.precision) is Precision.fp16 and device.type != "cuda":
        raise ConfigError(
            f"trainer.precision=fp16 is invalid on this job's device ({device}): it needs a CUDA GPU; "
            "use bf16 or fp32 on a CPU"
        )


def autocast(device: torch.device, precision: Precision | str):
    """bf16 autocast on `device` when `precision` is bf16; no context at all for fp32."""
    if Precision(precision) is not Precision.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@dataclass(frozen=True)
class Execution:
    """How the task network runs: autocast precision, and whether its training forward is
    torch.compile'd."""

    precision: Precision = Precision.fp32
    compile: bool = False

    def autocast(self, device: torch.device):
        return autocast(device, self.precision)

    def training_forward(self, module: torch.nn.Module):
        """The callable that training steps call (the compiled module shares the module's
        parameters)."""
        return torch.compile(module) if self.compile else module


def memory_format(device: torch.device, x: torch.Tensor) -> torch.memory_format:
    """channels-last for image batches on a GPU (faster convolutions, above all in bf16); as is
    elsewhere."""
    return torch.channels_last if device.type == "cuda" and x.ndim == 4 else torch.preserve_format


def synchronize(device: torch.device) -> None:
    """Wait for `device`'s queued kernels (a no-op on the CPU), so that a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory_bytes(device: torch.device, cpu_budget: int) -> int:
    """Bytes a batch of work may use on `device`: most of the free GPU memory, or `cpu_budget` on a
    CPU."""
    if device.type != "cuda":
        return cpu_budget
    free, _ = torch.cuda.mem_get_info(device)
    return int(free * 0.5)
