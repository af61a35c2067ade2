"""The evaluate stage of a zoo of many tasks: every held-out task scored (the generated models and each baseline of
pdiff.unseen), margins with intervals over the held-out tasks, the report and its plot. Held-out tasks' labels
are read here and nowhere before."""

from __future__ import annotations

import logging
import time

import torch

from pdiff import atomic
from pdiff.config import HeldOutSplit, Stage
from pdiff.data.tasknets import build_task_net, run_in_batches
from pdiff.generators.flow import VELOCITY_WEIGHTS
from pdiff.pipeline.stage_dirs import claim_stage_dir, stage_inputs
from pdiff.pipeline.stages import GENERATED_PARAMS, Run, evaluation_outputs
from pdiff.unseen.baselines import TaskZoo
from pdiff.unseen.collect import TaskRecipe, head_name
from pdiff.unseen.evaluate import CONFIDENCE, HeldOutInputs, Scorer, finetune_steps_for, score_task, summarize
from pdiff.unseen.families import SubsetFamily
from pdiff.unseen.report import write_task_report
from pdiff.zoo.store import ParamZoo, load_base_weights

log = logging.getLogger(__name__)


def run_task_evaluate(run: Run) -> dict:
    cfg, family_cfg = run.cfg, run.cfg.task.family
    started = time.perf_counter()
    directory = run.dir("eval")
    claim_stage_dir(directory, stage_inputs(cfg, Stage.evaluate), keep_on_change=False,
                    companions=evaluation_outputs(run.output_dir))
    zoo = ParamZoo.load(run.output_dir / "zoo")
    generated = atomic.read_safetensors(run.output_dir / "generated" / GENERATED_PARAMS)
    family = SubsetFamily(int(zoo.tasks.descriptor.shape[1]))
    data = run.data
    x_eval, y_eval = (data.x_test, data.y_test) if family_cfg.eval_split == "test" else (data.x_val, data.y_val)
    base_state = load_base_weights(run.output_dir / "zoo")
    base = build_task_net(cfg.task.net, data.input_shape, data.num_classes)
    base.load_state_dict(base_state)
    base.to(data.x_train.device).eval()
    with torch.no_grad():
        base_logits = run_in_batches(base, x_eval)
    velocity = atomic.read_safetensors(run.output_dir / "generator" / VELOCITY_WEIGHTS)
    steps = finetune_steps_for(sum(t.numel() for t in velocity.values()), cfg.sampler, float(cfg.generate.guidance),
                               zoo.spec.dim, cfg.task.collect.batch_size)
    inputs = HeldOutInputs(data, x_eval, y_eval, cfg.task.net, base_state, base_logits,
                           TaskRecipe.from_config(cfg.task), cfg.seed, family_cfg.seeds, family_cfg.k_nearest, steps)
    scorer = Scorer(inputs)
    tasks = TaskZoo(zoo, family, head_name(scorer.model))
    held_out = [code for code in zoo.meta["family"]["held_out"] if code in set(generated["task"].tolist())]
    rows = []
    for code in held_out:
        mine = generated["task"] == code
        rows.append(score_task(code, tasks, generated["params"][mine], generated["control_params"][mine], inputs,
                               scorer))
        log.info("evaluate: task %d (distance %d): generated %.2f%%, trained %.2f%%, nearest with swap %.2f%%", code,
                 rows[-1]["distance"], rows[-1]["generated_mean"], rows[-1]["baselines"]["trained"],
                 rows[-1]["baselines"]["nearest_symmetric"])
    report = {"task": cfg.task.name, "family": zoo.meta["family"]["name"],
              "split": HeldOutSplit(family_cfg.split).value,
              "eval_split": family_cfg.eval_split, "seed": cfg.seed, "k": zoo.k, "dim": zoo.spec.dim,
              "train_tasks": len(zoo.meta["family"]["train"]), "split_check": zoo.meta["family"]["split_check"],
              "finetune_steps": steps, "confidence": CONFIDENCE,
              "generated_mean": sum(row["generated_mean"] for row in rows) / len(rows),
              "summary": summarize(rows, cfg.seed), "rows": rows,
              "memorization": {key: sum(row["memorization"][key] for row in rows) / len(rows)
                               for key in rows[0]["memorization"]}}
    write_task_report(run.output_dir, report)
    run.record_time("evaluate", time.perf_counter() - started)
    return report
