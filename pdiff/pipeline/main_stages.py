"""The main job's own stages (one task): a collection run's checkpoints, sampling aimed at
generate.target_acc, and its evaluate stage (pdiff.pipeline.main_evaluate_stage)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from pdiff import atomic
from pdiff.config import Stage
from pdiff.data.augment import Augmentation
from pdiff.data.datasets import Dataset
from pdiff.evaluation.costs import run_key
from pdiff.generators.interface import Conditioning, Generator
from pdiff.pipeline.collect_stage import base_model, train_base_model
from pdiff.pipeline.main_evaluate_stage import evaluate_main_job
from pdiff.pipeline.run_context import JobStages, Run, Samples
from pdiff.pipeline.stage_dirs import stage_inputs
from pdiff.seeds import Purpose, derive_seed
from pdiff.zoo.collect import checkpoint_interval, collect_checkpoints
from pdiff.zoo.params import is_whole_model
from pdiff.zoo.store import BASE_WEIGHTS, ParamZoo, load_base_weights, run_sizes

log = logging.getLogger(__name__)


class MainJob(JobStages):
    """One task's zoo: checkpoints of the task network, generated models aimed at an accuracy,
    scored against the zoo they came from. pdiff.config.validate makes all of its config checks."""

    def check_design(self, cfg: DictConfig) -> None:
        pass

    def check_generation(self, cfg: DictConfig, stages: list[Stage]) -> None:
        pass

    def check_collection(self, cfg: DictConfig, data: Dataset) -> None:
        pass

    def collect_run(self, run: Run, index: int, path: Path, started: float) -> None:
        """Its own data order; for whole models run r > 0 also trains its own base model from
        scratch (its own initialisation), while a layer subset keeps the shared base."""
        cfg, directory = run.cfg, run.output_dir / "zoo"
        runs = cfg.task.collect.runs
        model, spec = base_model(run)
        init_seed, base_acc, base_digest = derive_seed(cfg.seed, Purpose.base), None, None
        if is_whole_model(model, spec) and index > 0:  # its own base model, from scratch
            init_seed = derive_seed(cfg.seed, Purpose.base, index)
            model, base_acc = train_base_model(run, init_seed, path.with_suffix(".base_state.pt"))
            log.info("collect: run %d/%d: own base model at %.2f%%", index + 1, runs, base_acc)
        else:
            model.load_state_dict(load_base_weights(directory))
            base_digest = atomic.sha256(directory / BASE_WEIGHTS)
        collect_seed = derive_seed(cfg.seed, Purpose.collect_run, index)
        vectors, accuracy = collect_checkpoints(
            model,
            spec,
            run.data,
            cfg.task.collect,
            run_sizes(cfg.task.param.k, runs)[index],
            Augmentation.from_config(cfg.data),
            collect_seed,
            path.with_suffix(".state.pt"),
            run.task_execution,
        )
        interval = checkpoint_interval(cfg.task.collect, len(run.data.x_train))
        seconds = time.perf_counter() - started
        run.record_time(run_key(index), seconds)
        record = {
            "init_seed": init_seed,
            "collect_seed": collect_seed,
            "base_val_acc": base_acc,
            "steps": [interval * (i + 1) for i in range(len(vectors))],
            "config_sha256": atomic.json_digest(stage_inputs(cfg, Stage.collect)),
            "base_sha256": base_digest,
        }
        atomic.write_safetensors(
            path,
            {"params": vectors, "val_accuracy": accuracy},
            metadata={"spec": json.dumps(spec.to_json()), "run": json.dumps(record)},
        )
        log.info(
            "collect: run %d/%d: %d checkpoints in %.1f s", index + 1, runs, len(vectors), seconds
        )

    def zoo_meta(self, run: Run) -> dict:
        return {}

    def sample(self, run: Run, generator: Generator, zoo: ParamZoo) -> Samples:
        """generate.n models, aimed at generate.target_acc (or target_quantile) when it is set."""
        cfg = run.cfg
        conditioning = Conditioning.from_config(cfg.generate, zoo.val_accuracy)
        warn_outside_zoo(conditioning, zoo.val_accuracy)
        params = generator.sample(cfg.generate.n, cfg.sampler, cfg.seed, conditioning)
        return Samples(
            params,
            {},
            target_acc=conditioning.target_acc if conditioning else None,
            guidance=conditioning.guidance if conditioning else None,
        )

    def evaluate(self, run: Run) -> dict:
        return evaluate_main_job(run)


def warn_outside_zoo(conditioning: Conditioning | None, val_accuracy: torch.Tensor) -> bool:
    """Warn (and say so) when generation aims at an accuracy outside the zoo's validation
    accuracies: the generator never saw a checkpoint there, so what it makes is an extrapolation."""
    low, high = float(val_accuracy.min()), float(val_accuracy.max())
    if conditioning is None or low <= conditioning.target_acc <= high:
        return False
    log.warning(
        "generate.target_acc=%.2f lies outside the zoo's validation accuracies (%.2f-%.2f%%): "
        "the generator never saw a checkpoint there; aim inside that range (or use "
        "generate.target_quantile)",
        conditioning.target_acc,
        low,
        high,
    )
    return True
