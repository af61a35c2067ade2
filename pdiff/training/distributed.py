"""Who this process is in a multi-process run (torchrun, the deepspeed launcher or SLURM tasks), and
the process group's start, reductions and clean end.

`detect()` is the one place rank, world size and the rendezvous address are read. A single process
with no launcher is rank 0 of 1.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pdiff.errors import RendezvousError
from pdiff.training import rendezvous

DEFAULT_PORT = 29500
MAX_PORT = 65535


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    launcher: str = "none"  # "env" (torchrun, deepspeed), "slurm" or "none"
    address_from: str = "MASTER_ADDR"  # where master_addr came from: the setting a user changes
    nodes: int = 1  # hosts the ranks run on, where the launcher says (SLURM)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list ('node[01-04]' -> 'node01'), through scontrol when it is
    there."""
    try:
        done = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30
        )
        if done.returncode == 0 and done.stdout.split():
            return done.stdout.split()[0]
    except FileNotFoundError:
        pass
    return nodelist.split(",")[0].split("[")[0]


def _integer(
    env: Mapping[str, str], key: str, default: int, low: int = 0, high: int | None = None
) -> int:
    """Environment variable `key` as an integer in [low, high] (`default` when unset);
    RendezvousError naming it."""
    text = env.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        allowed = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise RendezvousError(
            f"environment variable {key}={text!r} is invalid: it must be {allowed}; set it so, or "
            "unset it"
        )
    return value


def _port(env: Mapping[str, str], default: int) -> int:
    return _integer(env, "MASTER_PORT", default, low=1, high=MAX_PORT)


def detect(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Rank, world and rendezvous from torchrun/deepspeed (RANK, WORLD_SIZE...) or SLURM
    (SLURM_PROCID...). RendezvousError names a variable that is not a valid number (MASTER_PORT=abc,
    a port above 65535)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(
            _integer(env, "RANK", 0),
            _integer(env, "LOCAL_RANK", 0),
            _integer(env, "WORLD_SIZE", 1, 1),
            env.get("MASTER_ADDR", "127.0.0.1"),
            _port(env, DEFAULT_PORT),
            "env",
        )
    if _integer(env, "SLURM_NTASKS", 1, 1) > 1 and "SLURM_PROCID" in env:
        job_id = _integer(env, "SLURM_JOB_ID", 0)
        master_addr, address_from = env.get("MASTER_ADDR"), "MASTER_ADDR"
        if not master_addr:
            nodelist = env.get("SLURM_JOB_NODELIST", "127.0.0.1")
            master_addr, address_from = (
                _first_host(nodelist),
                f"the first node of SLURM_JOB_NODELIST={nodelist}",
            )
        return DistEnv(
            _integer(env, "SLURM_PROCID", 0),
            _integer(env, "SLURM_LOCALID", 0),
            _integer(env, "SLURM_NTASKS", 1, 1),
            master_addr,
            _port(env, 15000 + job_id % 20000),
            "slurm",
            address_from,
            _integer(env, "SLURM_JOB_NUM_NODES", _integer(env, "SLURM_NNODES", 1, 1), 1),
        )
    return DistEnv(
        master_port=_port(env, DEFAULT_PORT)
    )  # a single process's group of one (DeepSpeed) uses it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def export(env: DistEnv) -> None:
    """Write the env:// rendezvous variables torch.distributed and DeepSpeed read."""
    os.environ.update(
        RANK=str(env.rank),
        LOCAL_RANK=str(env.local_rank),
        WORLD_SIZE=str(env.world_size),
        MASTER_ADDR=env.master_addr,
        MASTER_PORT=str(env.master_port),
    )


def start(env: DistEnv, device: torch.device | None = None, timeout_min: int = 120) -> None:
    """Join the process group; a single process gets a group of one on a free port.

    On a GPU (`device`, already set as this rank's) the group is `cpu:gloo,cuda:nccl`: NCCL for the
    GPU tensors, gloo for the CPU ones (metric averages, barriers). On a CPU it is gloo.
    """
    if dist.is_initialized():
        return
    if not env.distributed and "MASTER_PORT" not in os.environ:
        env = DistEnv(master_port=free_port())
    if env.distributed:
        rendezvous.check(
            env.rank,
            env.master_addr,
            env.master_port,
            env.address_from,
            env.nodes,
            bind_port=env.launcher == "slurm",
        )
    export(env)
    on_gpu = device is not None and device.type == "cuda"
    dist.init_process_group(
        "cpu:gloo,cuda:nccl" if on_gpu else "gloo",
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(minutes=timeout_min),
        device_id=device if on_gpu else None,
    )


def rank_hosts() -> list[str]:
    """Every rank's host and address, in rank order (a collective: every rank calls it)."""
    here = rendezvous.host_address()
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [here]
    hosts: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(hosts, here)
    return [str(host) for host in hosts]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over all ranks (the values themselves in a single process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(tensor)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, tensor)}


def shutdown(clean: bool = True) -> None:
    """Leave the process group so that no gloo thread outlives it.

    Without the barrier and the pause, a gloo rank sometimes aborts at interpreter exit after a
    successful run ("terminate called without an active exception"; see DEEPSPEED-WANDB-NOTES).
    After an error (`clean=False`) there is no barrier: the other ranks may never reach it.
    """
    if not dist.is_initialized():
        return
    if clean:
        dist.barrier()
    dist.destroy_process_group()
    time.sleep(1.0)
