"""The held-out-task job's evaluate stage: every held-out task scored (the generated models and
each baseline of pdiff.heldout), margins with intervals over the held-out tasks, the report and its
plot. Held-out tasks' labels are read here and nowhere before."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from pdiff import atomic
from pdiff.config import HeldOutSplit, Stage
from pdiff.data.tasknets import build_task_net, run_in_batches
from pdiff.errors import ConfigError
from pdiff.generators import design_class
from pdiff.heldout.baselines import TaskZoo
from pdiff.heldout.collect import TaskRecipe, head_name
from pdiff.heldout.evaluate import (
    HeldOutInputs,
    Scorer,
    finetune_steps_for,
    score_task,
    summarize_margins,
)
from pdiff.heldout.families import SubsetFamily
from pdiff.heldout.report import write_task_report
from pdiff.pipeline.generate_stage import GENERATED_PARAMS, evaluation_outputs
from pdiff.pipeline.run_context import Run
from pdiff.pipeline.stage_dirs import claim_stage_dir, stage_inputs
from pdiff.zoo.store import ParamZoo, load_base_weights

log = logging.getLogger(__name__)


def evaluate_heldout_job(run: Run) -> dict:
    """Each held-out task that generated/ holds models for, scored against its baselines; the
    report (margins with intervals over the tasks) and its plot."""
    cfg, family_cfg = run.cfg, run.cfg.task.family
    started = time.perf_counter()
    zoo = ParamZoo.load(run.output_dir / "zoo")
    generated = atomic.read_safetensors(run.output_dir / "generated" / GENERATED_PARAMS)
    held_out = scored_tasks(
        zoo.meta["family"]["held_out"], generated["task"].tolist(), run.output_dir / "generated"
    )
    claim_stage_dir(
        run.dir("eval"),
        stage_inputs(cfg, Stage.evaluate),
        keep_on_change=False,  # after the checks
        companions=evaluation_outputs(run.output_dir),
    )
    family = SubsetFamily(int(zoo.tasks.descriptor.shape[1]))
    data = run.data
    x_eval, y_eval = (
        (data.x_test, data.y_test) if family_cfg.eval_split == "test" else (data.x_val, data.y_val)
    )
    base_state = load_base_weights(run.output_dir / "zoo")
    base = build_task_net(cfg.task.net, data.input_shape, data.num_classes)
    base.load_state_dict(base_state)
    base.to(data.x_train.device).eval()
    with torch.no_grad():
        base_logits = run_in_batches(base, x_eval)
    generator = design_class(cfg).load(run.output_dir / "generator", zoo.spec, cfg, run.device)
    steps = finetune_steps_for(
        generator.parameter_count(),  # the flow's one network: what a sampling step runs
        cfg.sampler,
        float(cfg.generate.guidance),
        zoo.spec.dim,
        cfg.task.collect.batch_size,
    )
    inputs = HeldOutInputs(
        data,
        x_eval,
        y_eval,
        cfg.task.net,
        base_state,
        base_logits,
        TaskRecipe.from_config(cfg.task),
        cfg.seed,
        family_cfg.seeds,
        family_cfg.k_nearest,
        steps,
    )
    scorer = Scorer(inputs)
    tasks = TaskZoo(zoo, family, head_name(scorer.model))
    controls = generated["control_params"]  # one per generated model, or none (generate.task)
    rows = []
    for code in held_out:
        mine = generated["task"] == code
        rows.append(
            score_task(
                code,
                tasks,
                generated["params"][mine],
                controls[mine] if len(controls) else controls,
                inputs,
                scorer,
            )
        )
        log.info(
            "evaluate: task %d (distance %d): generated %.2f%%, trained %.2f%%, "
            "nearest with swap %.2f%%",
            code,
            rows[-1]["distance"],
            rows[-1]["generated_mean"],
            rows[-1]["baselines"]["trained"],
            rows[-1]["baselines"]["nearest_symmetric"],
        )
    report = {
        "task": cfg.task.name,
        "family": zoo.meta["family"]["name"],
        "split": HeldOutSplit(family_cfg.split).value,
        "eval_split": family_cfg.eval_split,
        "seed": cfg.seed,
        "k": zoo.k,
        "dim": zoo.spec.dim,
        "train_tasks": len(zoo.meta["family"]["train"]),
        "split_check": zoo.meta["family"]["split_check"],
        "finetune_steps": steps,
        "confidence": cfg.evaluate.bootstrap.confidence,
        "generated_mean": sum(row["generated_mean"] for row in rows) / len(rows),
        "summary": summarize_margins(rows, cfg.seed, cfg.evaluate.bootstrap),
        "rows": rows,
        "memorization": {
            key: sum(row["memorization"][key] for row in rows) / len(rows)
            for key in rows[0]["memorization"]
        },
    }
    write_task_report(run.output_dir, report)
    run.record_time("evaluate", time.perf_counter() - started)
    return report


def scored_tasks(held_out: list[int], generated_tasks: list[int], generated_dir: Path) -> list[int]:
    """The held-out tasks generated/ holds models for, in the split's order; ConfigError (before
    eval/ is touched) when it holds models for a task the zoo did not hold out: the evaluation
    scores tasks the zoo never saw."""
    others = sorted(set(generated_tasks) - set(held_out))
    if others:
        raise ConfigError(
            f"{generated_dir} holds models for task(s) {others[:5]}, which the zoo did not hold "
            "out: the evaluate stage scores held-out tasks only. Generate for a held-out task (or "
            "leave generate.task unset) and evaluate again"
        )
    return [code for code in held_out if code in set(generated_tasks)]
