"""The live SLURM cluster: what its partitions offer, checked against what a submission asks before
any job goes in.

Both routes to SLURM use it: launch/submit.py's job chain (cluster.*) and a sweep on Hydra's
submitit_slurm launcher (hydra.launcher.*). A request SLURM would refuse, or accept and leave
pending forever (more nodes, CPUs, memory or time than the partition has), is one ConfigError naming
the key to change.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from pdiff.config import validate_slurm_request
from pdiff.errors import ConfigError

START_HINT = (
    "start the local cluster with `bash slurm/local-cluster.sh up`, or point SLURM_CONF at your cluster's "
    "slurm.conf"
)
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
LAUNCHER_NAMES = {
    "max_requeues": "max_num_timeout"
}  # pdiff's name of a setting -> the Hydra launcher's


def slurm(*args: str) -> str:
    """The stdout of a SLURM command; ConfigError in one line when SLURM is missing or the command
    fails."""
    command = " ".join(args)
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as error:
        raise ConfigError(
            f"SLURM is not installed here ({args[0]} not found): {START_HINT}"
        ) from error
    except subprocess.TimeoutExpired as error:
        raise ConfigError(
            f"`{command}` got no answer in 60 s: is the SLURM controller up? {START_HINT}"
        ) from error
    if done.returncode != 0:
        lines = (
            done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        ).splitlines()
        raise ConfigError(f"`{command}` failed: {lines[-1].strip()}")
    return done.stdout


@dataclass(frozen=True)
class Partition:
    """What a partition offers a job: its nodes (at most max_nodes per job), its largest node's CPUs
    and memory, and its time limit (None: no limit)."""

    name: str
    default: bool
    nodes: int
    max_nodes: int | None
    cpus: int
    mem_mb: int
    time_limit_min: int | None


@dataclass(frozen=True)
class SlurmRequest:
    """The most any one job of a submission asks for, and the key a user sets each setting with (for
    messages)."""

    partition: str | None
    nodes: int
    tasks_per_node: int
    cpus_per_task: int | None  # None: SLURM's default, one CPU per task
    mem_gb: int | None  # None: SLURM's default
    timeout_min: int
    keys: Mapping[str, str]


def _minutes(text: str) -> int | None:
    """sinfo's time limit ([days-]hours:minutes:seconds, or infinite) in whole minutes; None when
    unlimited."""
    if not re.fullmatch(r"(\d+-)?[\d:]+", text):
        return None
    days, _, clock = text.rpartition("-")
    hours, minutes, seconds = ([0, 0, 0] + [int(part) for part in clock.split(":")])[-3:]
    return (int(days or 0) * 24 + hours) * 60 + minutes + (seconds > 0)


def partitions() -> dict[str, Partition]:
    """Every partition of the cluster SLURM_CONF (or the default slurm.conf) names; ConfigError in
    one line, saying what to start, when its controller does not answer."""
    try:
        out = slurm("sinfo", "-h", "-o", "%P|%D|%c|%m|%l|%s")
    except ConfigError as error:
        raise ConfigError(f"no SLURM controller answers ({error}): {START_HINT}") from None
    rows: dict[str, list[list[str]]] = {}
    for line in out.splitlines():
        name, *fields = line.split("|")
        rows.setdefault(name, []).append(fields)
    found = {}
    for name, lines in rows.items():
        max_nodes = lines[0][4].rpartition("-")[2]
        found[name.rstrip("*")] = Partition(
            name=name.rstrip("*"),
            default=name.endswith("*"),
            nodes=sum(int(row[0]) for row in lines),
            max_nodes=int(max_nodes) if max_nodes.isdigit() else None,
            cpus=max(int(row[1].rstrip("+")) for row in lines),
            mem_mb=max(int(row[2].rstrip("+")) for row in lines),
            time_limit_min=_minutes(lines[0][3]),
        )
    return found


def check_request(request: SlurmRequest) -> None:
    """ConfigError naming the first setting the live cluster cannot give a job, before anything is
    submitted."""
    offered = partitions()
    key = request.keys
    if request.partition is None:
        default = [p for p in offered.values() if p.default]
        if not default:
            raise ConfigError(
                f"{key['partition']} is not set and this cluster has no default partition; "
                f"allowed: {sorted(offered)}"
            )
        partition = default[0]
    elif request.partition in offered:
        partition = offered[request.partition]
    else:
        raise ConfigError(
            f"{key['partition']}={request.partition!r} is not a partition of this cluster; "
            f"allowed: {sorted(offered)}"
        )
    where = f"partition {partition.name}"
    nodes = min(partition.nodes, partition.max_nodes or partition.nodes)
    if request.nodes > nodes:
        raise ConfigError(
            f"{key['nodes']}={request.nodes} is more than {where} gives a job: at most {nodes} "
            f"node{'s' * (nodes > 1)} (the job would wait forever)"
        )
    cpus = request.cpus_per_task or 1
    if cpus > partition.cpus:
        raise ConfigError(
            f"{key['cpus_per_task']}={cpus} is more than a node of {where} has: at most "
            f"{partition.cpus}"
        )
    if request.tasks_per_node * cpus > partition.cpus:
        raise ConfigError(
            f"{key['tasks_per_node']}={request.tasks_per_node} x {key['cpus_per_task']}={cpus} CPUs "
            f"do not fit a node of {where}: at most {partition.cpus} CPUs"
        )
    if request.mem_gb is not None and request.mem_gb * 1024 > partition.mem_mb:
        raise ConfigError(
            f"{key['mem_gb']}={request.mem_gb} is more memory than a node of {where} has: at most "
            f"{partition.mem_mb // 1024} GB ({partition.mem_mb} MB)"
        )
    limit = partition.time_limit_min
    if limit is not None and request.timeout_min > limit:
        raise ConfigError(
            f"{key['timeout_min']}={request.timeout_min} is more than the time limit of {where}: "
            f"at most {limit} minutes (the job would wait forever)"
        )


def chain_request(cluster_cfg: DictConfig) -> SlurmRequest:
    """The chain's largest job (the training job: cluster.nodes x cluster.tasks_per_node) as a
    SlurmRequest."""
    return SlurmRequest(
        partition=cluster_cfg.partition,
        nodes=cluster_cfg.nodes,
        tasks_per_node=cluster_cfg.tasks_per_node,
        cpus_per_task=cluster_cfg.cpus_per_task,
        mem_gb=cluster_cfg.mem_gb,
        timeout_min=cluster_cfg.timeout_min,
        keys={
            name: f"cluster.{name}"
            for name in (
                "partition",
                "nodes",
                "tasks_per_node",
                "cpus_per_task",
                "mem_gb",
                "timeout_min",
            )
        },
    )


def launcher_request(config: DictConfig) -> SlurmRequest | None:
    """What each job of a sweep on Hydra's submitit_slurm launcher asks for (None for any other
    launcher), checked by the static rules first. A message names cluster.KEY where the launcher
    takes it from there (pdiff_slurm)."""
    launcher = config.hydra.launcher
    if OmegaConf.select(launcher, "_target_") != SLURM_LAUNCHER:
        return None
    raw = OmegaConf.to_container(launcher, resolve=False)

    def key_of(name: str) -> str:
        own = LAUNCHER_NAMES.get(name, name)
        source = re.fullmatch(r"\$\{(cluster\.\w+)\}", str(raw.get(own)))
        return source.group(1) if source else f"hydra.launcher.{own}"

    settings = {
        name: launcher.get(LAUNCHER_NAMES.get(name, name))
        for name in (
            "partition",
            "nodes",
            "tasks_per_node",
            "cpus_per_task",
            "mem_gb",
            "timeout_min",
            "signal_delay_s",
            "array_parallelism",
            "max_requeues",
        )
    }
    validate_slurm_request(settings, key_of)
    return SlurmRequest(
        partition=settings["partition"],
        nodes=settings["nodes"],
        tasks_per_node=settings["tasks_per_node"],
        cpus_per_task=settings["cpus_per_task"],
        mem_gb=settings["mem_gb"],
        timeout_min=settings["timeout_min"],
        keys={name: key_of(name) for name in settings},
    )


def max_array_size(cluster_cfg: DictConfig) -> int:
    """cluster.max_array_size, or the cluster's MaxArraySize."""
    if cluster_cfg.max_array_size:
        return int(cluster_cfg.max_array_size)
    match = re.search(r"MaxArraySize\s*=\s*(\d+)", slurm("scontrol", "show", "config"))
    return int(match.group(1)) if match else 1001
