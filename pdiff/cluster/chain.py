"""SLURM through submitit: the pipeline as a chain of jobs; a Hydra sweep's launcher checked, and
given a fresh submitit folder, before it submits.

The chain: base training -> collection array (one task per collection run) -> merge + train (on
cluster.tasks_per_node DeepSpeed ranks) -> generate + evaluate, each `afterok` on the one before.
Only the jobs an output folder still needs are submitted. Every job resumes from its own files, so a
requeue (preemption, time limit, `scontrol requeue`) loses nothing. What either route asks of SLURM
is checked against the live cluster first (pdiff/cluster/slurm.py).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import submitit
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pdiff.cluster.jobs import Job, job_resources, pending_jobs, run_job
from pdiff.cluster.slurm import (
    chain_request,
    check_request,
    launcher_request,
    max_array_size,
    slurm,
)
from pdiff.config import Config, to_container
from pdiff.errors import ChainFailed, ConfigError, PdiffError
from pdiff.pipeline.output_dir import mark_made_by_pdiff
from pdiff.pipeline.run import STAGE_ORDER, preflight
from pdiff.pipeline.run_summary import summary_line

log = logging.getLogger(__name__)


class StageJob(submitit.helpers.Checkpointable):
    """A pipeline job on a node. On SLURM's pre-timeout signal submitit requeues it with the same
    arguments."""

    def __call__(self, config: dict, job: Job, index: int | None = None) -> str:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), config)
        cfg.threads = (
            cfg.threads or cfg.cluster.cpus_per_task
        )  # the job's CPUs, whatever the node has
        return run_job(cfg, job, index)


@dataclass
class SubmittedJob:
    name: str
    job: submitit.Job


SLURM_NAMES = {
    Job.base: "base",
    Job.collect: "collect",
    Job.train: "train",
    Job.report: "report",
}  # pdiff-<name>


def _executor(cluster_cfg, folder: Path, job: Job, after: list[str]) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(
        folder=folder / "%j", cluster="slurm", slurm_max_num_timeout=cluster_cfg.max_requeues
    )
    extra = {"kill-on-invalid-dep": "yes"}
    if after:
        extra["dependency"] = "afterok:" + ":".join(after)
    if cluster_cfg.qos:
        extra["qos"] = cluster_cfg.qos
    executor.update_parameters(
        name=f"pdiff-{SLURM_NAMES[job]}",
        timeout_min=cluster_cfg.timeout_min,
        cpus_per_task=cluster_cfg.cpus_per_task,
        mem_gb=cluster_cfg.mem_gb,
        **job_resources(cluster_cfg, job),
        slurm_partition=cluster_cfg.partition,
        slurm_account=cluster_cfg.account,
        slurm_array_parallelism=cluster_cfg.array_parallelism,
        slurm_signal_delay_s=cluster_cfg.signal_delay_s,
        slurm_additional_parameters=extra,
    )
    return executor


def _array_id(job: submitit.Job) -> str:
    return str(job.job_id).split("_")[0]


def submit_chain(cfg: DictConfig) -> tuple[list[SubmittedJob], Path]:
    """Submit the jobs this output folder still needs; returns them in chain order and the submitit
    folder. When sbatch refuses one, the jobs submitted before it are cancelled and a ConfigError
    says why."""
    preflight(cfg, list(STAGE_ORDER))  # the chain runs every stage this folder still needs
    check_request(chain_request(cfg.cluster))
    output_dir = Path(cfg.paths.output_dir).expanduser().resolve()
    pending = pending_jobs(cfg)
    mark_made_by_pdiff(output_dir)
    folder = output_dir / ".submitit" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    submitted: list[SubmittedJob] = []
    try:
        _submit_pending(cfg, pending, folder, submitted)
    except submitit.core.utils.FailedJobError as error:
        for item in submitted:
            item.job.cancel(check=False)
        reason = (str(error).strip().splitlines() or ["no message"])[-1]
        raise ConfigError(
            f"sbatch refused a job of the chain ({reason}); the {len(submitted)} jobs submitted "
            "before it were cancelled: check the cluster.* settings"
        ) from None
    return submitted, folder


def _submit_pending(
    cfg: DictConfig,
    pending: list[tuple[Job, int | None]],
    folder: Path,
    submitted: list[SubmittedJob],
) -> None:
    """Submit `pending` in chain order, each job `afterok` on the one before, appending each to
    `submitted`."""
    config = to_container(cfg)
    runs = [index for job, index in pending if job is Job.collect]
    chunk = max_array_size(cfg.cluster)
    after: list[str] = []
    if (Job.base, None) in pending:
        base = _executor(cfg.cluster, folder, Job.base, after).submit(StageJob(), config, Job.base)
        submitted.append(SubmittedJob("base", base))
        after = [str(base.job_id)]
    array_ids = []
    for start in range(0, len(runs), chunk):  # arrays above MaxArraySize are split
        part = runs[start : start + chunk]
        jobs = _executor(cfg.cluster, folder, Job.collect, after).map_array(
            StageJob(), [config] * len(part), [Job.collect] * len(part), part
        )
        submitted += [SubmittedJob(f"collect run {index}", job) for index, job in zip(part, jobs)]
        array_ids.append(_array_id(jobs[0]))
    after = array_ids or after
    for job in (Job.train, Job.report):
        if (job, None) in pending:
            handle = _executor(cfg.cluster, folder, job, after).submit(StageJob(), config, job)
            submitted.append(SubmittedJob(job.value, handle))
            after = [str(handle.job_id)]


TERMINAL_STATES = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
)


def final_state(job_id: str, timeout_s: float = 60.0) -> str:
    """The job's end state from accounting (which lags the job itself by a moment)."""
    deadline, state = time.monotonic() + timeout_s, "UNKNOWN"
    while time.monotonic() < deadline:
        lines = slurm("sacct", "-n", "-X", "-P", "-j", job_id, "--format=State").split()
        state = (
            lines[-1] if lines else state
        )  # ids restart on a new controller: the newest record is ours
        if state.startswith(TERMINAL_STATES):
            return state
        time.sleep(0.5)
    return state


def follow(submitted: list[SubmittedJob]) -> None:
    """Wait for every job in chain order; raise ChainFailed naming the first that did not complete."""
    for item in submitted:
        try:
            item.job.results()  # every task of the job (the train job may have several ranks)
        except (
            submitit.core.utils.FailedJobError,
            submitit.core.utils.UncompletedJobError,
        ) as error:
            state = final_state(str(item.job.job_id))
            for later in submitted:
                if not later.job.done():
                    later.job.cancel(check=False)
            raise ChainFailed(
                f"job '{item.name}' ({item.job.job_id}) ended {state}; log: {item.job.paths.stderr}"
                f" and {item.job.paths.stdout}\n{str(error).strip().splitlines()[-1]}"
            ) from error


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


class CheckSlurmLauncher(Callback):
    """Hydra callback: before a sweep on the submitit_slurm launcher submits anything, its settings
    against SLURM's rules and the live cluster; a missing controller or an impossible request exits
    with one line."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            request = launcher_request(config)
            if request is not None:
                check_request(request)
        except PdiffError as error:
            sys.exit(
                f"pdiff: error: {error}"
            )  # Hydra turns a callback's exception into a warning and goes on


class FreshSubmititFolder(Callback):
    """Hydra callback: move a sweep's old submitit folder aside before a new multirun starts.

    SLURM job ids restart at 1 on a new controller, so a reused folder could hand back an old result
    file.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        mark_made_by_pdiff(
            Path(config.hydra.sweep.dir).expanduser()
        )  # its points are marked only once they run
        template = OmegaConf.select(config, "hydra.launcher.submitit_folder", default=None)
        if not template:
            return
        folder = Path(str(template).split("%j")[0]).expanduser()
        if folder.is_dir() and any(folder.iterdir()):
            aside = folder.with_name(
                f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
            )
            shutil.move(str(folder), aside)
            log.info("moved the previous submitit folder aside to %s", aside)
