"""The held-out-task job's evaluate stage: every held-out task of task.family.eval_split scored (the
generated models and each baseline of pdiff.heldout), margins with intervals over those tasks, the
report and its plot. Their labels are read here and nowhere before."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pdiff import atomic
from pdiff.config import FamilyName, HeldOutSplit, Stage
from pdiff.data.tasknets import build_task_net
from pdiff.errors import ConfigError
from pdiff.generators import design_class
from pdiff.heldout.baselines import TaskZoo, train_pooled
from pdiff.heldout.collect import TaskRecipe, head_name
from pdiff.heldout.evaluate import (
    HeldOutInputs,
    Scorer,
    baseline_names,
    finetune_steps_for,
    score_task,
    summarize_margins,
    worth_steps,
)
from pdiff.heldout.families import family_of
from pdiff.heldout.report import write_task_report
from pdiff.heldout.split import EvalSplit, TaskSplit, split_seed_of
from pdiff.pipeline.generate_stage import GENERATED_PARAMS, evaluation_outputs
from pdiff.pipeline.run_context import Run
from pdiff.pipeline.stage_dirs import claim_stage_dir, stage_inputs
from pdiff.zoo.store import ParamZoo, load_base_weights

log = logging.getLogger(__name__)


def evaluate_heldout_job(run: Run) -> dict:
    """Each task of task.family.eval_split that generated/ holds models for, scored against its
    baselines; the report (margins with intervals over the tasks) and its plot."""
    cfg, family_cfg = run.cfg, run.cfg.task.family
    started = time.perf_counter()
    eval_split = EvalSplit(family_cfg.eval_split)
    zoo = ParamZoo.load(run.output_dir / "zoo")
    generated = atomic.read_safetensors(run.output_dir / "generated" / GENERATED_PARAMS)
    meta = zoo.meta["family"]
    split = TaskSplit(meta["train"], meta["val"], meta["test"], [])
    scored = scored_tasks(split, eval_split, generated["task"].tolist(), run.output_dir)
    claim_stage_dir(
        run.dir("eval"),
        stage_inputs(cfg, Stage.evaluate),
        keep_on_change=False,  # after the checks
        companions=evaluation_outputs(run.output_dir),
    )
    data = run.data
    family = family_of(cfg, data.num_classes)
    base_state = load_base_weights(run.output_dir / "zoo")
    base = build_task_net(cfg.task.net, data.input_shape, data.num_classes)
    base.load_state_dict(base_state)
    base.to(data.x_train.device).eval()
    generator = design_class(cfg).load(run.output_dir / "generator", zoo.spec, cfg, run.device)
    recipe = TaskRecipe.from_config(cfg.task)
    pooled = (
        train_pooled(family, split.train, data, cfg.task.net, recipe, cfg.seed)
        if FamilyName(family_cfg.name) is FamilyName.variants
        else None
    )
    inputs = HeldOutInputs(
        data,
        eval_split,
        cfg.task.net,
        base_state,
        base,
        recipe,
        cfg.seed,
        family_cfg.seeds,
        family_cfg.k_nearest,
        [int(steps) for steps in family_cfg.finetune_steps],
        finetune_steps_for(
            generator.parameter_count(),  # the flow's one network: what a sampling step runs
            cfg.sampler,
            float(cfg.generate.guidance),
            zoo.spec.dim,
            cfg.task.collect.batch_size,
        ),
        pooled,
        project=lambda vectors: generator.normalizer.denormalize(
            generator.basis.decode(generator.basis.encode(generator.normalizer.normalize(vectors)))
        ),
    )
    scorer = Scorer(inputs, family.outputs)
    tasks = TaskZoo(zoo, family, head_name(scorer.model))
    controls = generated["control_params"]  # one per generated model, or none (generate.task)
    names = baseline_names(family, inputs.finetune_steps)
    rows = []
    for index, code in enumerate(scored):
        mine = generated["task"] == code
        other = generated["task"] == scored[(index + 1) % len(scored)]
        rows.append(
            score_task(
                code,
                tasks,
                generated["params"][mine],
                controls[mine] if len(controls) else controls,
                generated["params"][other] if len(scored) > 1 else controls[:0],
                inputs,
                scorer,
            )
        )
        log.info(
            "evaluate: task %d (%s, distance %.2f): generated %.2f%%, trained %.2f%%, "
            "nearest %.2f%%, ridge %.2f%%",
            code,
            rows[-1]["region"],
            rows[-1]["distance"],
            rows[-1]["generated_mean"],
            rows[-1]["baselines"]["trained"],
            rows[-1]["baselines"]["nearest"],
            rows[-1]["baselines"]["ridge"],
        )
    report = {
        "task": cfg.task.name,
        "family": meta["name"],
        "split": HeldOutSplit(family_cfg.split).value
        if FamilyName(family_cfg.name) is FamilyName.subsets
        else "range",
        "split_seed": split_seed_of(family_cfg, cfg.seed),
        "eval_split": eval_split.value,
        "seed": cfg.seed,
        "k": zoo.k,
        "dim": zoo.spec.dim,
        "train_tasks": len(meta["train"]),
        "split_check": family.split_check(zoo.tasks.task.tolist(), split, family_cfg),
        "finetune_steps": inputs.finetune_steps,
        "matched_steps": inputs.matched_steps,
        "ridge_alpha": tasks.ridge_alpha,
        "confidence": cfg.evaluate.bootstrap.confidence,
        "generated_mean": sum(row["generated_mean"] for row in rows) / len(rows),
        "summary": summarize_margins(rows, names, cfg.seed, cfg.evaluate.bootstrap),
        "worth": worth_steps(rows, inputs.finetune_steps, inputs.matched_steps),
        "rows": rows,
        "memorization": {
            key: sum(row["memorization"][key] for row in rows) / len(rows)
            for key in rows[0]["memorization"]
        },
    }
    write_task_report(run.output_dir, report)
    run.record_time("evaluate", time.perf_counter() - started)
    return report


def scored_tasks(
    split: TaskSplit, eval_split: EvalSplit, generated_tasks: list[int], output_dir: Path
) -> list[int]:
    """The tasks of `eval_split` that generated/ holds models for, in the split's order; ConfigError
    (before eval/ is touched) when it holds models for a task the zoo did not hold out, or none for
    a task of `eval_split`: the evaluation scores held-out tasks only."""
    others = sorted(set(generated_tasks) - set(split.held_out))
    if others:
        raise ConfigError(
            f"{output_dir / 'generated'} holds models for task(s) {others[:5]}, which the zoo did "
            "not hold out: the evaluate stage scores held-out tasks only. Generate for a held-out "
            "task (or leave generate.task unset) and evaluate again"
        )
    scored = [code for code in split.scored(eval_split) if code in set(generated_tasks)]
    if not scored:
        raise ConfigError(
            f"{output_dir / 'generated'} holds no models for the {eval_split.value} tasks that "
            f"task.family.eval_split={eval_split.value} scores; generate for one of them"
        )
    return scored
