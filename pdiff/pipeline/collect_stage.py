"""The collect stage: the base model, the collection runs (each run's training is its job's:
Run.stages.collect_run) and their merge into the zoo; resumable, skip-if-done.

DIR/zoo: base_model.safetensors, runs/, zoo.safetensors + zoo.json (resume: *_state.pt). zoo.json,
written last, records the stage's inputs (RECORD_KEY) and the digests of the files later stages
read.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from pdiff import atomic
from pdiff.config import Stage, to_container
from pdiff.data.augment import Augmentation
from pdiff.data.tasknets import build_task_net
from pdiff.errors import ZooError
from pdiff.pipeline.run_context import Run
from pdiff.pipeline.stage_dirs import RECORD_KEY, claim_stage_dir, stage_inputs
from pdiff.seeds import Purpose, derive_seed
from pdiff.training.devices import memory_format
from pdiff.zoo.align import align_runs
from pdiff.zoo.collect import train_base
from pdiff.zoo.params import ParamSpec, select_parameters
from pdiff.zoo.store import (
    BASE_WEIGHTS,
    ParamZoo,
    run_path,
    run_sizes,
    save_base_weights,
)

log = logging.getLogger(__name__)


def _zoo_dir(run: Run) -> Path:
    """DIR/zoo, claimed for this config's collect inputs (costly work: never overwritten)."""
    directory = run.dir("zoo")
    claim_stage_dir(directory, stage_inputs(run.cfg, Stage.collect), keep_on_change=True)
    return directory


def base_model(run: Run) -> tuple[torch.nn.Module, ParamSpec]:
    """The task network (initialised on the CPU, so its weights do not depend on the device), on the
    device."""
    model = build_task_net(run.cfg.task.net, run.data.input_shape, run.data.num_classes)
    model.to(run.device, memory_format=memory_format(run.device, run.data.x_train))
    return model, select_parameters(
        model, list(run.cfg.task.param.layers), statistics=run.cfg.task.param.statistics
    )


def train_base_model(run: Run, seed: int, state_path: Path) -> tuple[torch.nn.Module, float]:
    """A base model trained from scratch: initialisation and data order from `seed` (resumable per
    epoch)."""
    torch.manual_seed(seed)
    model, _ = base_model(run)
    accuracy = train_base(
        model,
        run.data,
        run.cfg.task.base,
        Augmentation.from_config(run.cfg.data),
        seed,
        state_path,
        run.task_execution,
    )
    return model, accuracy


def run_base(run: Run) -> None:
    """Train the base model once: every layer-subset run continues from it (and whole-model run 0
    does)."""
    cfg, directory = run.cfg, _zoo_dir(run)
    if (directory / BASE_WEIGHTS).is_file():
        return
    started = time.perf_counter()
    model, base_acc = train_base_model(
        run, derive_seed(cfg.seed, Purpose.base), directory / "base_state.pt"
    )
    save_base_weights(directory, model.state_dict())
    run.tracker.log({"collect/base_val_acc": base_acc})
    run.record_time("collect_base", time.perf_counter() - started)
    log.info(
        "collect: base model trained to %.2f%% validation accuracy in %.1f s",
        base_acc,
        time.perf_counter() - started,
    )


def run_collection(run: Run, index: int) -> None:
    """Collection run `index` of task.collect.runs, as its job collects it (Run.stages.collect_run);
    nothing when its file exists."""
    cfg, directory = run.cfg, _zoo_dir(run)
    path = run_path(directory, index, cfg.task.collect.runs)
    if path.is_file():
        return
    run.stages.collect_run(run, index, path, time.perf_counter())


def run_merge(run: Run) -> None:
    """Join the collection runs, in run order (each aligned onto run 0 with task.collect.align),
    into the zoo."""
    cfg, directory = run.cfg, _zoo_dir(run)
    if ParamZoo.exists(directory):
        return
    runs = cfg.task.collect.runs
    paths = [run_path(directory, index, runs) for index in range(runs)]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise ZooError(f"cannot merge the zoo in {directory}: runs {missing} are not collected yet")
    spec = ParamSpec.from_json(json.loads(atomic.read_safetensors_metadata(paths[0])["spec"]))
    records = [json.loads(atomic.read_safetensors_metadata(path)["run"]) for path in paths]
    check_runs_belong(cfg, directory, paths, records)
    meta = {
        "task": cfg.task.name,
        "seed": cfg.seed,
        "runs": runs,
        "run_sizes": run_sizes(cfg.task.param.k, runs),
        "checkpoint_run": [index for index, record in enumerate(records) for _ in record["steps"]],
        "checkpoint_step": [step for record in records for step in record["steps"]],
        "run_records": records,
        "aligned": bool(cfg.task.collect.align),
        "config": to_container(cfg),
        RECORD_KEY: stage_inputs(cfg, Stage.collect),
        **run.stages.zoo_meta(run),
    }
    if cfg.task.collect.align:
        model, _ = base_model(run)
        paths, meta["alignment"] = align_runs(
            model.cpu(), spec, paths, directory / "runs" / "aligned"
        )
    zoo = ParamZoo.merge(directory, paths, spec, meta)
    log.info(
        "collect: %d checkpoints of %d parameters from %d runs, validation accuracy %.2f-%.2f%%",
        zoo.k,
        spec.dim,
        runs,
        float(zoo.val_accuracy.min()),
        float(zoo.val_accuracy.max()),
    )


def check_runs_belong(
    cfg: DictConfig, directory: Path, paths: list[Path], records: list[dict]
) -> None:
    """ZooError naming each collection run that was made with another config (another seed, lr, data
    file, ...) or from another base model than this zoo's: such runs are never merged."""
    config = atomic.json_digest(stage_inputs(cfg, Stage.collect))
    base = atomic.sha256(directory / BASE_WEIGHTS) if (directory / BASE_WEIGHTS).is_file() else None
    foreign = [
        f"{path.name} (another config)"
        for path, record in zip(paths, records)
        if record.get("config_sha256") != config
    ]
    foreign += [
        f"{path.name} (another base model)"
        for path, record in zip(paths, records)
        if record.get("config_sha256") == config and record.get("base_sha256") not in (None, base)
    ]
    if foreign:
        raise ZooError(
            f"cannot merge the zoo in {directory}: {', '.join(foreign)} was not collected by this "
            "collection; delete those run files to collect them again, or use a new "
            "paths.output_dir"
        )


def run_collect(run: Run) -> None:
    """The whole collection in this process: base model, every collection run in turn, merge."""
    if ParamZoo.exists(_zoo_dir(run)):
        log.info("collect: zoo in %s is complete, skipping", run.output_dir / "zoo")
        return
    started = time.perf_counter()
    run_base(run)
    for index in range(run.cfg.task.collect.runs):
        run_collection(run, index)
    run_merge(run)
    run.record_time("collect", time.perf_counter() - started)
