"""SLURM through submitit: the pipeline as a chain of jobs, and a fresh submitit folder per Hydra sweep.

The chain: base training -> collection array (one task per collection run) -> merge + train (on
cluster.tasks_per_node DeepSpeed ranks) -> generate + evaluate, each `afterok` on the one before. Only
the jobs an output folder still needs are submitted. Every job resumes from its own files, so a requeue
(preemption, time limit, `scontrol requeue`) loses nothing.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import submitit
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pdiff.cluster.jobs import Job, job_resources, pending_jobs, run_job
from pdiff.config import Config, to_container
from pdiff.errors import ChainFailed, ConfigError
from pdiff.evaluation.report import summary_line
from pdiff.pipeline.output_dir import mark_made_by_pdiff
from pdiff.pipeline.run import preflight
from pdiff.pipeline.stages import STAGE_ORDER

log = logging.getLogger(__name__)


class StageJob(submitit.helpers.Checkpointable):
    """A pipeline job on a node. On SLURM's pre-timeout signal submitit requeues it with the same arguments."""

    def __call__(self, config: dict, job: Job, index: int | None = None) -> str:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), config)
        cfg.threads = cfg.threads or cfg.cluster.cpus_per_task  # the job's CPUs, whatever the node has
        return run_job(cfg, job, index)


@dataclass
class SubmittedJob:
    name: str
    job: submitit.Job



def _slurm(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as error:
        raise ConfigError(f"SLURM is not installed here ({args[0]} not found); for a local cluster run "
                          "`bash slurm/local-cluster.sh up`") from error
    if done.returncode != 0:
        raise ConfigError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def max_array_size(cluster_cfg) -> int:
    if cluster_cfg.max_array_size:
        return int(cluster_cfg.max_array_size)
    match = re.search(r"MaxArraySize\s*=\s*(\d+)", _slurm("scontrol", "show", "config"))
    return int(match.group(1)) if match else 1001


def check_cluster(cluster_cfg) -> None:
    """Partition and CPU count against the live cluster, before anything is submitted."""
    partitions = [p.rstrip("*") for p in _slurm("sinfo", "-h", "-o", "%P").split()]
    partition = cluster_cfg.partition
    if partition is not None and partition not in partitions:
        raise ConfigError(f"cluster.partition={partition!r} is not a partition of this cluster; allowed: {partitions}")
    query = ["sinfo", "-h", "-o", "%c"] + (["-p", partition] if partition else [])
    cpus = max(int(value.rstrip("+")) for value in _slurm(*query).split())
    if cluster_cfg.cpus_per_task > cpus:
        raise ConfigError(f"cluster.cpus_per_task={cluster_cfg.cpus_per_task} is more than a node of partition "
                          f"{partition or '(default)'} has: at most {cpus}")
    if cluster_cfg.tasks_per_node * cluster_cfg.cpus_per_task > cpus:
        raise ConfigError(f"cluster.tasks_per_node={cluster_cfg.tasks_per_node} x cluster.cpus_per_task="
                          f"{cluster_cfg.cpus_per_task} CPUs do not fit a node of partition "
                          f"{partition or '(default)'}: at most {cpus} CPUs")


SLURM_NAMES = {Job.base: "base", Job.collect: "collect", Job.train: "train", Job.report: "report"}  # pdiff-<name>


def _executor(cluster_cfg, folder: Path, job: Job, after: list[str]) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm",
                                     slurm_max_num_timeout=cluster_cfg.max_requeues)
    extra = {"kill-on-invalid-dep": "yes"}
    if after:
        extra["dependency"] = "afterok:" + ":".join(after)
    if cluster_cfg.qos:
        extra["qos"] = cluster_cfg.qos
    executor.update_parameters(
        name=f"pdiff-{SLURM_NAMES[job]}", timeout_min=cluster_cfg.timeout_min, cpus_per_task=cluster_cfg.cpus_per_task,
        mem_gb=cluster_cfg.mem_gb, **job_resources(cluster_cfg, job),
        slurm_partition=cluster_cfg.partition, slurm_account=cluster_cfg.account,
        slurm_array_parallelism=cluster_cfg.array_parallelism, slurm_signal_delay_s=cluster_cfg.signal_delay_s,
        slurm_additional_parameters=extra)
    return executor


def _array_id(job: submitit.Job) -> str:
    return str(job.job_id).split("_")[0]


def submit_chain(cfg: DictConfig) -> tuple[list[SubmittedJob], Path]:
    """Submit the jobs this output folder still needs; returns them in chain order and the submitit folder."""
    preflight(cfg, list(STAGE_ORDER))  # the chain runs every stage this folder still needs
    check_cluster(cfg.cluster)
    output_dir = Path(cfg.paths.output_dir).expanduser().resolve()
    pending = pending_jobs(cfg)
    mark_made_by_pdiff(output_dir)
    folder = output_dir / ".submitit" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    config = to_container(cfg)
    runs = [index for job, index in pending if job is Job.collect]
    chunk = max_array_size(cfg.cluster)
    submitted: list[SubmittedJob] = []
    after: list[str] = []
    if (Job.base, None) in pending:
        base = _executor(cfg.cluster, folder, Job.base, after).submit(StageJob(), config, Job.base)
        submitted.append(SubmittedJob("base", base))
        after = [str(base.job_id)]
    array_ids = []
    for start in range(0, len(runs), chunk):  # arrays above MaxArraySize are split
        part = runs[start:start + chunk]
        jobs = _executor(cfg.cluster, folder, Job.collect, after).map_array(
            StageJob(), [config] * len(part), [Job.collect] * len(part), part)
        submitted += [SubmittedJob(f"collect run {index}", job) for index, job in zip(part, jobs)]
        array_ids.append(_array_id(jobs[0]))
    after = array_ids or after
    for job in (Job.train, Job.report):
        if (job, None) in pending:
            handle = _executor(cfg.cluster, folder, job, after).submit(StageJob(), config, job)
            submitted.append(SubmittedJob(job.value, handle))
            after = [str(handle.job_id)]
    return submitted, folder


TERMINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                   "BOOT_FAIL", "DEADLINE")


def final_state(job_id: str, timeout_s: float = 60.0) -> str:
    """The job's end state from accounting (which lags the job itself by a moment)."""
    deadline, state = time.monotonic() + timeout_s, "UNKNOWN"
    while time.monotonic() < deadline:
        lines = _slurm("sacct", "-n", "-X", "-P", "-j", job_id, "--format=State").split()
        state = lines[-1] if lines else state  # ids restart on a new controller: the newest record is ours
        if state.startswith(TERMINAL_STATES):
            return state
        time.sleep(0.5)
    return state


def follow(submitted: list[SubmittedJob]) -> None:
    """Wait for every job in chain order; raise ChainFailed naming the first that did not complete."""
    for item in submitted:
        try:
            item.job.results()  # every task of the job (the train job may have several ranks)
        except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as error:
            state = final_state(str(item.job.job_id))
            for later in submitted:
                if not later.job.done():
                    later.job.cancel(check=False)
            raise ChainFailed(f"job '{item.name}' ({item.job.job_id}) ended {state}; log: {item.job.paths.stderr}"
                              f" and {item.job.paths.stdout}\n{str(error).strip().splitlines()[-1]}") from error


def submit_pipeline(cfg: DictConfig) -> int:
    """Submit (and with cluster.wait, follow) the job chain; print ids, folders and the outcome."""
    output_dir = Path(cfg.paths.output_dir).expanduser().resolve()
    submitted, folder = submit_chain(cfg)
    if not submitted:
        print(f"pdiff: nothing to do, {output_dir} is complete: {output_dir / 'report.md'}")
        return 0
    for item in submitted:
        print(f"submitted {item.name}: job {item.job.job_id}")
    print(f"pdiff: {len(submitted)} jobs -> {output_dir} (submitit logs: {folder})")
    if not cfg.cluster.wait:
        return 0
    started = time.perf_counter()
    follow(submitted)
    report = OmegaConf.to_container(OmegaConf.load(output_dir / "report.json"))
    print(summary_line("all", output_dir, report, time.perf_counter() - started))
    return 0


class FreshSubmititFolder(Callback):
    """Hydra callback: move a sweep's old submitit folder aside before a new multirun starts.

    SLURM job ids restart at 1 on a new controller, so a reused folder could hand back an old result file.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        mark_made_by_pdiff(Path(config.hydra.sweep.dir).expanduser())  # its points are marked only once they run
        template = OmegaConf.select(config, "hydra.launcher.submitit_folder", default=None)
        if not template:
            return
        folder = Path(str(template).split("%j")[0]).expanduser()
        if folder.is_dir() and any(folder.iterdir()):
            aside = folder.with_name(f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
            shutil.move(str(folder), aside)
            log.info("moved the previous submitit folder aside to %s", aside)
