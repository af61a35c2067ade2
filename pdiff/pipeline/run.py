"""Run the pipeline in this process: pick the job's stages, check the whole config first, then each
stage inside one run.

The stages themselves (what each reads and writes) are in pdiff/pipeline/*_stage.py, each job's own
part of them in main_stages.py and heldout_stages.py; stage-folder provenance in
pdiff/pipeline/stage_dirs.py; the same stages as cluster jobs in pdiff/cluster/jobs.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from pdiff import atomic
from pdiff.allocator import keep_freed_memory
from pdiff.config import LoggerName, Stage, TrainerName, to_container, validate
from pdiff.data.datasets import check_data_available, load_dataset
from pdiff.data.tasknets import build_task_net
from pdiff.errors import ConfigError
from pdiff.generators import design_class, generator_exists
from pdiff.generators.interface import verify_generator
from pdiff.heldout.families import has_family
from pdiff.pipeline.collect_stage import run_collect
from pdiff.pipeline.evaluate_stage import check_generated_matches, run_evaluate
from pdiff.pipeline.generate_stage import run_generate
from pdiff.pipeline.heldout_stages import HeldOutTaskJob
from pdiff.pipeline.main_stages import MainJob
from pdiff.pipeline.output_dir import folder_problem, output_lock
from pdiff.pipeline.run_context import JobStages, Run
from pdiff.pipeline.run_summary import summary_line
from pdiff.pipeline.stage_dirs import changed_inputs, refuse_changed, stage_inputs
from pdiff.pipeline.train_stage import run_train
from pdiff.tracking import Tracker, recorded_run_id
from pdiff.training import distributed
from pdiff.training.devices import check_precision, resolve_device
from pdiff.zoo.collect import check_runs
from pdiff.zoo.params import select_parameters
from pdiff.zoo.store import ParamZoo

log = logging.getLogger(__name__)
STAGE_ORDER = (Stage.collect, Stage.train, Stage.generate, Stage.evaluate)
STAGE_RUNNERS = {
    Stage.collect: run_collect,
    Stage.train: run_train,
    Stage.generate: run_generate,
    Stage.evaluate: run_evaluate,
}


ZOO_WARN_BYTES = 2**30  # a zoo larger than this is announced with its size before collection starts


def job_for(cfg: DictConfig) -> JobStages:
    """The job `cfg` runs: the held-out-task job for a zoo of many tasks (task.family.name set),
    else the main job. The one place the two are told apart."""
    return HeldOutTaskJob() if has_family(cfg) else MainJob()


def preflight(cfg: DictConfig, stages: list[Stage]) -> None:
    """Every config check that can fail, before any work starts (nothing is written before it
    passes)."""
    job = job_for(cfg)
    job.check_design(cfg)  # first: validate()'s generic checks are the main job's
    validate(cfg)
    problem = folder_problem(Path(cfg.paths.output_dir))
    if problem:
        raise ConfigError(f"paths.output_dir={cfg.paths.output_dir!r} {problem}")
    design_class(cfg)
    job.check_generation(cfg, stages)
    if LoggerName(cfg.logger.name) is LoggerName.wandb:
        recorded_run_id(Path(cfg.paths.output_dir).expanduser().resolve())
    check_stage_folders(cfg, stages)
    if Stage.collect in stages or Stage.evaluate in stages:
        check_data_available(cfg.data)
    if Stage.collect in stages:
        data = load_dataset(cfg.data)
        model = build_task_net(cfg.task.net, data.input_shape, data.num_classes)
        spec = select_parameters(
            model, list(cfg.task.param.layers), statistics=cfg.task.param.statistics
        )
        if cfg.task.param.statistics and not spec.variance_names:
            raise ConfigError(
                f"task.param.statistics=true carries BatchNorm running statistics, but no layer of "
                f"task.param.layers={list(cfg.task.param.layers)} has any: set it to false or "
                "select BatchNorm layers"
            )
        check_runs(cfg.task.collect, model, spec, cfg.evaluate.recalibrate_batches)
        job.check_collection(cfg, data)
        check_zoo_size(cfg, spec.dim, Path(cfg.paths.output_dir).expanduser().resolve())


def check_stage_folders(cfg: DictConfig, stages: list[Stage]) -> None:
    """Whatever a stage of `stages` would refuse once started, before config.yaml says what the
    folder holds: ConfigError when the zoo, or the generator that `stages` train or sample, was made
    with another config; the stages' errors for a stage folder's damaged inputs.json, or a zoo,
    generator or generated models whose files do not match their digests."""
    output_dir = Path(cfg.paths.output_dir).expanduser().resolve()
    refuse_changed(
        output_dir / "zoo", stage_inputs(cfg, Stage.collect)
    )  # every stage reads the zoo
    if ParamZoo.exists(output_dir / "zoo"):
        ParamZoo.load(output_dir / "zoo")
    if Stage.train in stages or Stage.generate in stages:
        refuse_changed(output_dir / "generator", stage_inputs(cfg, Stage.train))
    if Stage.generate in stages and (
        Stage.train not in stages or generator_exists(output_dir / "generator")
    ):
        verify_generator(output_dir / "generator")
    if Stage.generate in stages:
        changed_inputs(output_dir / "generated", stage_inputs(cfg, Stage.generate))
    if Stage.evaluate in stages:
        changed_inputs(output_dir / "eval", stage_inputs(cfg, Stage.evaluate))
    if Stage.evaluate in stages and Stage.generate not in stages:
        check_generated_matches(cfg, output_dir / "generated")


def check_zoo_size(cfg: DictConfig, dim: int, output_dir: Path) -> None:
    """ConfigError when the zoo cannot fit on the output folder's disk; a warning with its size when
    it is large."""
    k = cfg.task.param.k
    zoo_bytes = 2 * k * dim * 4  # float32, in the collection runs' files and in the merged zoo
    existing = next(parent for parent in (output_dir, *output_dir.parents) if parent.exists())
    free = shutil.disk_usage(existing).free
    size = f"task.param.k={k} checkpoints x {dim} parameters is {zoo_bytes / 2**30:.2f} GiB on disk"
    if zoo_bytes > free:
        raise ConfigError(
            f"{size}, but {existing} has {free / 2**30:.2f} GiB free: lower task.param.k, select "
            "fewer layers (task.param.layers), or use another paths.output_dir"
        )
    if zoo_bytes > ZOO_WARN_BYTES:
        steps = k * (cfg.task.collect.steps_per_checkpoint or 1)
        log.warning(
            "%s (%.2f GiB free) and at least %d SGD steps of collection", size, free / 2**30, steps
        )


def usable_threads(threads: int) -> int:
    """`threads`, capped (with a warning) at the cores this process may run on: more threads than
    cores only make every one of them wait."""
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    if threads > cores:
        log.warning(
            "threads=%d is more than the %d cores this job may use: using %d", threads, cores, cores
        )
        return cores
    return threads


def open_run(
    cfg: DictConfig, env: distributed.DistEnv | None = None, device: torch.device | None = None
) -> Run:
    """The output folder with the resolved config in it, and a tracker (rank 0's; a silent one
    elsewhere)."""
    env, device = env or distributed.DistEnv(), device or torch.device("cpu")
    keep_freed_memory()
    if cfg.threads > 0:
        torch.set_num_threads(usable_threads(cfg.threads))
    output_dir = Path(cfg.paths.output_dir).expanduser().resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if env.is_main:
        atomic.write_text(
            output_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(to_container(cfg)))
        )
    return Run(
        cfg,
        output_dir,
        Tracker(output_dir, cfg.logger, to_container(cfg), enabled=env.is_main),
        job_for(cfg),
        env,
        device,
    )


@contextmanager
def opened_run(cfg: DictConfig) -> Iterator[Run]:
    """open_run inside this launch's process group (started when there are several ranks or
    DeepSpeed)."""
    env, trainer = distributed.detect(), TrainerName(cfg.trainer.name)
    if env.distributed and trainer is not TrainerName.deepspeed:
        raise ConfigError(
            f"this launch has {env.world_size} ranks ({env.launcher}) but trainer={trainer.value}; "
            "use trainer=deepspeed, or launch one process"
        )
    device = resolve_device(
        cfg.device, env.local_rank, cfg.deterministic
    )  # in the job: a login node may have no GPU
    check_precision(cfg.trainer, device)
    if env.distributed or trainer is TrainerName.deepspeed:
        distributed.start(env, device)
    run, clean = open_run(cfg, env, device), False
    try:
        yield run
        clean = True
    finally:
        run.tracker.close()
        distributed.shutdown(clean)


def on_main_rank(run: Run, stage: Callable[[Run], object]) -> object:
    """Run a single-process stage on rank 0 while the other ranks wait for it."""
    result = stage(run) if run.env.is_main else None
    distributed.barrier()
    return result


def run_pipeline(cfg: DictConfig) -> dict | None:
    """Run `cfg.stage` (or all stages) into `cfg.paths.output_dir`; return the report when
    evaluation ran."""
    stage = Stage(cfg.stage)
    stages = list(STAGE_ORDER) if stage is Stage.all else [stage]
    preflight(cfg, stages)  # nothing is written before it passes
    with output_lock(cfg):
        check_stage_folders(cfg, stages)  # again, now that no other run can change them
        report = _run_stages(cfg, stages)
    return report


def _run_stages(cfg: DictConfig, stages: list[Stage]) -> dict | None:
    report, started = None, time.perf_counter()
    with opened_run(cfg) as run:
        for current in stages:
            runner = STAGE_RUNNERS[current]
            result = runner(run) if current is Stage.train else on_main_rank(run, runner)
            report = result if current is Stage.evaluate else report
    if run.env.is_main:
        print(
            summary_line(
                Stage(cfg.stage).value, run.output_dir, report, time.perf_counter() - started
            )
        )
    return report
