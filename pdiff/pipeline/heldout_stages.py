"""The held-out-task job's own stages (a zoo of many tasks, pdiff.heldout): its config checks, a
collection run's share of the (training task, seed) pairs, the family split that zoo.json records,
sampling for each held-out task (validation and test) with a random-descriptor control, and its
evaluate stage (pdiff.pipeline.heldout_evaluate_stage)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from pdiff import atomic
from pdiff.config import FamilyName, Stage
from pdiff.data.datasets import Dataset, load_dataset
from pdiff.errors import ConfigError
from pdiff.evaluation.costs import run_key
from pdiff.generators.interface import Conditioning, Generator
from pdiff.heldout.collect import TaskRecipe, collect_tasks, run_pairs, task_network
from pdiff.heldout.families import (
    check_family,
    check_family_counts,
    check_generate_task,
    task_family,
)
from pdiff.pipeline.heldout_evaluate_stage import evaluate_heldout_job
from pdiff.pipeline.run_context import JobStages, Run, Samples
from pdiff.pipeline.stage_dirs import stage_inputs
from pdiff.seeds import Purpose, generator_for
from pdiff.zoo.store import BASE_WEIGHTS, ParamZoo, load_base_weights

log = logging.getLogger(__name__)


class HeldOutTaskJob(JobStages):
    """A zoo of many tasks of one family: models generated for tasks it never saw, scored against
    what those tasks get without the generator."""

    def check_design(self, cfg: DictConfig) -> None:
        """ConfigError unless a zoo of many tasks has a design that takes the descriptor, and counts
        that make a zoo (checked before validate(): its generic checks are a one-task zoo's)."""
        check_family_counts(cfg.task.family)
        design = cfg.generator.design
        if design != "flow" or not cfg.generator.get("condition", False):
            raise ConfigError(
                f"generator.design={design!r} "
                f"(generator.condition={cfg.generator.get('condition')}) cannot "
                "generate for a task: a zoo of many tasks needs the descriptor-conditioned flow, "
                "generator=flow_pca_tasks (experiment=heldout_subsets's), flow_pca or "
                "flow_conditioned"
            )

    def check_generation(self, cfg: DictConfig, stages: list[Stage]) -> None:
        if cfg.generate.task is not None and (Stage.generate in stages or Stage.evaluate in stages):
            check_generate_task(
                cfg, load_dataset(cfg.data).num_classes, scored=Stage.evaluate in stages
            )

    def check_collection(self, cfg: DictConfig, data: Dataset) -> None:
        check_family(cfg, data)

    def collect_run(self, run: Run, index: int, path: Path, started: float) -> None:
        """Its share of the (training task, seed) pairs."""
        cfg, directory = run.cfg, run.output_dir / "zoo"
        family, split = task_family(cfg, run.data.num_classes)
        pairs = run_pairs(split.train, cfg.task.family.seeds, index, cfg.task.collect.runs)
        base_state = load_base_weights(directory)
        tensors = collect_tasks(
            pairs,
            family,
            run.data,
            cfg.task.net,
            base_state,
            TaskRecipe.from_config(cfg.task),
            cfg.seed,
            path.with_suffix(".state.safetensors"),
        )
        _, spec = task_network(
            cfg.task.net, run.data.input_shape, base_state, cfg.seed, 0, family.outputs
        )
        seconds = time.perf_counter() - started
        run.record_time(run_key(index), seconds)
        epochs = cfg.task.family.epochs
        record = {
            "pairs": [list(pair) for pair in pairs],
            "init_seed": None,
            "collect_seed": None,
            "base_val_acc": None,
            "steps": [epochs + c + 1 for _ in pairs for c in range(cfg.task.family.checkpoints)],
            "config_sha256": atomic.json_digest(stage_inputs(cfg, Stage.collect)),
            "base_sha256": atomic.sha256(directory / BASE_WEIGHTS),
        }
        atomic.write_safetensors(
            path, tensors, metadata={"spec": json.dumps(spec.to_json()), "run": json.dumps(record)}
        )
        log.info(
            "collect: run %d/%d: %d tasks, %d checkpoints in %.1f s",
            index + 1,
            cfg.task.collect.runs,
            len(pairs),
            len(tensors["task"]),
            seconds,
        )

    def zoo_meta(self, run: Run) -> dict:
        """The family, and its split into training, validation and test tasks."""
        cfg = run.cfg
        _, split = task_family(cfg, run.data.num_classes)
        return {
            "family": {
                "name": FamilyName(cfg.task.family.name).value,
                "train": split.train,
                "val": split.val,
                "test": split.test,
            }
        }

    def sample(self, run: Run, generator: Generator, zoo: ParamZoo) -> Samples:
        """generate.n models for the task generate.task names, or for every held-out task
        (validation and test) and as many for random unused tasks (the control: neither trained on
        nor held out), all in one batch: the task models [T*n, D] with {task: [T*n] ids,
        control_params, control_task} (no controls for generate.task)."""
        cfg = run.cfg
        family, split = task_family(cfg, run.data.num_classes)
        n = cfg.generate.n
        if cfg.generate.task is not None:
            codes = torch.tensor([family.code_of(list(cfg.generate.task))]).repeat_interleave(n)
            controls = torch.zeros(0, dtype=torch.int64)
        else:
            held_out = [*zoo.meta["family"]["val"], *zoo.meta["family"]["test"]]
            codes = torch.tensor(held_out).repeat_interleave(n)
            draws = torch.randint(
                0,
                len(split.unused),
                (len(codes),),
                generator=generator_for(cfg.seed, Purpose.task_control),
            )
            controls = torch.tensor(split.unused)[draws]
        both = torch.cat([codes, controls])
        params = generator.sample(
            len(both),
            cfg.sampler,
            cfg.seed,
            Conditioning(None, float(cfg.generate.guidance), family.descriptor(both)),
        )
        log.info(
            "generate: %d models for %d tasks, %d for random descriptors",
            len(codes),
            len(set(codes.tolist())),
            len(controls),
        )
        extra = {"task": codes, "control_params": params[len(codes) :], "control_task": controls}
        return Samples(params[: len(codes)], extra, tasks=sorted(set(codes.tolist())))

    def evaluate(self, run: Run) -> dict:
        return evaluate_heldout_job(run)
