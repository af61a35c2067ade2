"""The pipeline as cluster jobs: what each job runs, and which jobs an output folder still needs.

    base   -> collect stage: the base model
    shard  -> collect stage: one collection shard (an array task)
    train  -> collect stage's merge, then the train stage (on all the job's tasks)
    report -> generate and evaluate stages
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from omegaconf import DictConfig

from pdiff.config import Stage
from pdiff.generators import generator_exists
from pdiff.pipeline import on_main_rank, opened_run
from pdiff.stage_dirs import changed_inputs, refuse_changed, stage_inputs
from pdiff.stages import (
    EVAL_MEMORIZATION,
    Run,
    run_base,
    run_collect_shard,
    run_evaluate,
    run_generate,
    run_merge,
    run_train,
)
from pdiff.zoo import BASE_WEIGHTS, ParamZoo, shard_path


class Job(Enum):
    base = "base"
    shard = "shard"
    train = "train"
    report = "report"


JOB_STAGES = {Job.base: (Stage.collect,), Job.shard: (Stage.collect,), Job.train: (Stage.collect, Stage.train),
              Job.report: (Stage.generate, Stage.evaluate)}


def _run_train_job(run: Run) -> None:
    on_main_rank(run, run_merge)
    run_train(run)


def _run_report_job(run: Run) -> None:
    on_main_rank(run, run_generate)
    on_main_rank(run, run_evaluate)


def run_job(cfg: DictConfig, job: Job, shard: int | None = None) -> str:
    """One job of the chain as a cluster node runs it (the train job on all its tasks); returns the folder."""
    runners = {Job.base: lambda run: on_main_rank(run, run_base),
               Job.shard: lambda run: on_main_rank(run, lambda r: run_collect_shard(r, shard)),
               Job.train: _run_train_job, Job.report: _run_report_job}
    with opened_run(cfg) as run:
        runners[job](run)
    return str(run.output_dir)


def pending_jobs(cfg: DictConfig) -> list[tuple[Job, int | None]]:
    """The jobs still needed to finish this output folder, in chain order: (job, shard)."""
    out = Path(cfg.paths.output_dir).expanduser().resolve()
    zoo_dir, generator_dir = out / "zoo", out / "generator"
    refuse_changed(zoo_dir, stage_inputs(cfg, Stage.collect))
    refuse_changed(generator_dir, stage_inputs(cfg, Stage.train))
    jobs: list[tuple[Job, int | None]] = []
    if not ParamZoo.exists(zoo_dir):
        if not (zoo_dir / BASE_WEIGHTS).is_file():
            jobs.append((Job.base, None))
        shards = cfg.task.collect.shards
        jobs += [(Job.shard, s) for s in range(shards) if not shard_path(zoo_dir, s, shards).is_file()]
    if jobs or not generator_exists(generator_dir):
        jobs.append((Job.train, None))
    report_current = ((out / "report.json").is_file() and (out / "eval" / EVAL_MEMORIZATION).is_file()
                      and not changed_inputs(out / "eval", stage_inputs(cfg, Stage.evaluate)))
    if jobs or not report_current:
        jobs.append((Job.report, None))
    return jobs
