"""The pipeline as cluster jobs: what each job runs, and which jobs an output folder still needs.

base   -> collect stage: the base model
collect -> collect stage: one collection run (an array task)
train  -> collect stage's merge, then the train stage (on all the job's tasks)
report -> generate and evaluate stages
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path

from omegaconf import DictConfig

from pdiff.config import Stage
from pdiff.generators import generator_exists
from pdiff.pipeline.collect_stage import run_base, run_collection, run_merge
from pdiff.pipeline.evaluate_stage import run_evaluate
from pdiff.pipeline.generate_stage import run_generate
from pdiff.pipeline.main_evaluate_stage import EVAL_MEMORIZATION
from pdiff.pipeline.run import on_main_rank, opened_run
from pdiff.pipeline.run_context import Run
from pdiff.pipeline.stage_dirs import changed_inputs, refuse_changed, stage_inputs
from pdiff.pipeline.train_stage import run_train
from pdiff.zoo.store import BASE_WEIGHTS, ParamZoo, run_path


class Job(Enum):
    base = "base"
    collect = "collect"
    train = "train"
    report = "report"


def job_steps(job: Job, index: int | None = None) -> list[Callable[[Run], object]]:
    """What `job` runs, in order: stage runners from pdiff/pipeline/*_stage.py (the docstring above
    maps them to stages)."""
    return {
        Job.base: [run_base],
        Job.collect: [lambda run: run_collection(run, index)],
        Job.train: [run_merge, run_train],
        Job.report: [run_generate, run_evaluate],
    }[job]


ON_ALL_RANKS = (run_train,)  # the other steps run on rank 0 while the other ranks wait


def run_job(cfg: DictConfig, job: Job, index: int | None = None) -> str:
    """One job of the chain as a cluster node runs it (the train job on all its tasks); returns the
    folder."""
    with opened_run(cfg) as run:
        for step in job_steps(job, index):
            if step in ON_ALL_RANKS:
                step(run)
            else:
                on_main_rank(run, step)
    return str(run.output_dir)


def job_resources(cluster_cfg, job: Job) -> dict[str, int | None]:
    """What `job` asks SLURM for: only the training job spans `cluster.nodes` nodes with several
    tasks and all of a node's GPUs; the others run one task with one GPU when listed in
    `cluster.gpu_jobs`, else none."""
    gpus = cluster_cfg.gpus_per_node if job.value in cluster_cfg.gpu_jobs else None
    if job is Job.train:
        return {
            "nodes": cluster_cfg.nodes,
            "tasks_per_node": cluster_cfg.tasks_per_node,
            "gpus_per_node": gpus,
        }
    return {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1 if gpus else None}


def pending_jobs(cfg: DictConfig) -> list[tuple[Job, int | None]]:
    """The jobs still needed to finish this output folder, in chain order: (job, collection run)."""
    out = Path(cfg.paths.output_dir).expanduser().resolve()
    zoo_dir, generator_dir = out / "zoo", out / "generator"
    refuse_changed(zoo_dir, stage_inputs(cfg, Stage.collect))
    refuse_changed(generator_dir, stage_inputs(cfg, Stage.train))
    jobs: list[tuple[Job, int | None]] = []
    if not ParamZoo.exists(zoo_dir):
        if not (zoo_dir / BASE_WEIGHTS).is_file():
            jobs.append((Job.base, None))
        runs = cfg.task.collect.runs
        jobs += [(Job.collect, r) for r in range(runs) if not run_path(zoo_dir, r, runs).is_file()]
    if jobs or not generator_exists(generator_dir):
        jobs.append((Job.train, None))
    report_current = (
        (out / "report.json").is_file()
        and (out / "eval" / EVAL_MEMORIZATION).is_file()
        and not changed_inputs(out / "eval", stage_inputs(cfg, Stage.evaluate))
    )
    if jobs or not report_current:
        jobs.append((Job.report, None))
    return jobs
