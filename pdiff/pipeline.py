"""Run the pipeline in this process: check the whole config first, then each stage inside one run.

The stages themselves (what each reads and writes) are in pdiff/stages.py; stage-folder provenance in
pdiff/stage_dirs.py; the same stages as cluster jobs in pdiff/jobs.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from pdiff import atomic, distributed
from pdiff.collect import check_runs
from pdiff.config import ConfigError, Stage, TrainerName, to_container, validate
from pdiff.data import check_data_available, load_dataset
from pdiff.devices import check_precision, resolve_device
from pdiff.generators import design_class
from pdiff.params import select_parameters
from pdiff.report import summary_line
from pdiff.stages import STAGE_ORDER, STAGE_RUNNERS, Run
from pdiff.tasknets import build_task_net
from pdiff.tracking import Tracker


def preflight(cfg: DictConfig, stages: list[Stage]) -> None:
    """Every config check that can fail, before any work starts."""
    validate(cfg)
    design_class(cfg)
    if Stage.collect in stages or Stage.evaluate in stages:
        check_data_available(cfg.data)
    if Stage.collect in stages:
        data = load_dataset(cfg.data)
        model = build_task_net(cfg.task.net, data.input_shape, data.num_classes)
        spec = select_parameters(model, list(cfg.task.param.layers), statistics=cfg.task.param.statistics)
        if cfg.task.param.statistics and not spec.variance_names:
            raise ConfigError(f"task.param.statistics=true carries BatchNorm running statistics, but no layer of "
                              f"task.param.layers={list(cfg.task.param.layers)} has any: set it to false or select "
                              "BatchNorm layers")
        check_runs(cfg.task.collect, model, spec, cfg.evaluate.recalibrate_batches)


def open_run(cfg: DictConfig, env: distributed.DistEnv | None = None, device: torch.device | None = None) -> Run:
    """The output folder with the resolved config in it, and a tracker (rank 0's; a silent one elsewhere)."""
    env, device = env or distributed.DistEnv(), device or torch.device("cpu")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    output_dir = Path(cfg.paths.output_dir).expanduser().resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if env.is_main:
        atomic.write_text(output_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(to_container(cfg))))
    return Run(cfg, output_dir, Tracker(output_dir, cfg.logger, to_container(cfg), enabled=env.is_main), env, device)


@contextmanager
def opened_run(cfg: DictConfig) -> Iterator[Run]:
    """open_run inside this launch's process group (started when there are several ranks or DeepSpeed)."""
    env, trainer = distributed.detect(), TrainerName(cfg.trainer.name)
    if env.distributed and trainer is not TrainerName.deepspeed:
        raise ConfigError(f"this launch has {env.world_size} ranks ({env.launcher}) but trainer={trainer.value}; "
                          "use trainer=deepspeed, or launch one process")
    device = resolve_device(cfg.device, env.local_rank, cfg.deterministic)  # in the job: a login node may have no GPU
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
    """Run `cfg.stage` (or all stages) into `cfg.paths.output_dir`; return the report when evaluation ran."""
    stage = Stage(cfg.stage)
    stages = list(STAGE_ORDER) if stage is Stage.all else [stage]
    preflight(cfg, stages)
    report, started = None, time.perf_counter()
    with opened_run(cfg) as run:
        for current in stages:
            runner = STAGE_RUNNERS[current]
            result = runner(run) if current is Stage.train else on_main_rank(run, runner)
            report = result if current is Stage.evaluate else report
    if run.env.is_main:
        print(summary_line(stage.value, run.output_dir, report, time.perf_counter() - started))
    return report
