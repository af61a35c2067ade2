"""Held-out tasks scored: the generated models and every baseline of pdiff.heldout.baselines, per
task, then each baseline's margin to the generated models with a bootstrap interval over the
held-out tasks.

A population's accuracy on a task is the mean accuracy (percent) of its models on that task's
evaluation split. Test labels are read here only (the evaluate stage); the zoo, the generator and
the generated models never saw a held-out task's labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pdiff.config import BootstrapConfig, SamplerName
from pdiff.data.datasets import Dataset
from pdiff.data.tasknets import accuracy
from pdiff.evaluation.intervals import percentile_interval
from pdiff.evaluation.verdict import TIES, status_of
from pdiff.heldout.baselines import TaskZoo, compose, matched_finetune_steps
from pdiff.heldout.collect import TaskRecipe, task_network, train_task
from pdiff.seeds import Purpose, derive_seed, generator_for
from pdiff.zoo.params import write_vector

REFERENCE = (
    "trained"  # the model trained on the held-out task: the gap to close, not a family to beat
)
BASELINES = (
    "nearest",
    "nearest_symmetric",
    "nearest_finetuned",
    "average_k_nearest",
    "ridge",
    "composed",
    "random_descriptor",
    "majority",
)


@dataclass
class HeldOutInputs:
    """What scoring the held-out tasks needs besides the zoo."""

    data: Dataset  # C-class data; x_eval/y_eval below are its evaluation split
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    net_cfg: object
    base_state: dict[str, torch.Tensor]
    base_logits: torch.Tensor  # the C-class base model on x_eval [N, C]
    recipe: TaskRecipe
    seed: int
    seeds: int  # task seeds of the reference (as in the zoo)
    k_nearest: int
    finetune_steps: int


class Scorer:
    """Accuracies of binary task-network weight vectors on one task's evaluation labels."""

    def __init__(self, inputs: HeldOutInputs):
        self.inputs = inputs
        self.model, self.spec = task_network(
            inputs.net_cfg, inputs.data.input_shape, inputs.base_state, inputs.seed, 0
        )
        self.model.to(inputs.x_eval.device).eval()

    def __call__(self, vectors: torch.Tensor, y: torch.Tensor) -> list[float]:
        scores = []
        for vector in vectors:
            write_vector(self.model, self.spec, vector)
            scores.append(accuracy(self.model, self.inputs.x_eval, y))
        return scores


def mean(values: list[float]) -> float:
    return float(sum(values) / len(values))


def score_task(
    code: int,
    tasks: TaskZoo,
    generated: torch.Tensor,
    control: torch.Tensor,
    inputs: HeldOutInputs,
    scorer: Scorer,
) -> dict:
    """One held-out task's row: its distance to the training tasks, the generated models' accuracy,
    every baseline's, and how far the generated models lie from the zoo."""
    family, data = tasks.family, inputs.data
    y = family.labels(code, inputs.y_eval)
    y_train, y_val = family.labels(code, data.y_train), family.labels(code, data.y_val)
    reference = []
    for task_seed in range(inputs.seeds):
        model, spec = task_network(
            inputs.net_cfg, data.input_shape, inputs.base_state, inputs.seed, task_seed
        )
        model.to(inputs.x_eval.device)
        vectors, _ = train_task(
            model,
            spec,
            data,
            y_train,
            y_val,
            inputs.recipe,
            derive_seed(inputs.seed, Purpose.task_order, f"{code}:{task_seed}"),
        )
        reference.append(vectors)
    nearest, plain_distance = tasks.nearest(code, symmetric=False)
    symmetric, distance = tasks.nearest(code, symmetric=True)
    k_nearest, _ = tasks.nearest(code, symmetric=True, k=inputs.k_nearest)
    starts = torch.cat([tasks.oriented(t, code, last_only=True) for t in symmetric])
    finetuned = []
    for start in starts:
        model, spec = task_network(
            inputs.net_cfg, data.input_shape, inputs.base_state, inputs.seed, 0
        )
        model.to(inputs.x_eval.device)
        write_vector(model, spec, start)
        vectors, _ = train_task(
            model,
            spec,
            data,
            y_train,
            y_val,
            inputs.recipe,
            derive_seed(inputs.seed, Purpose.task_order, f"{code}:finetune"),
            steps=inputs.finetune_steps,
        )
        finetuned.append(vectors[-1])
    average = torch.cat([tasks.oriented(t, code, last_only=True) for t in k_nearest]).mean(
        0, keepdim=True
    )
    majority = float(max(y.float().mean(), 1 - y.float().mean()) * 100)
    baselines = {
        REFERENCE: mean(scorer(torch.cat(reference), y)),
        "nearest": mean(scorer(torch.cat([tasks.rows(t) for t in nearest]), y)),
        "nearest_symmetric": mean(
            scorer(torch.cat([tasks.oriented(t, code) for t in symmetric]), y)
        ),
        "nearest_finetuned": mean(scorer(torch.stack(finetuned), y)),
        "average_k_nearest": mean(scorer(average, y)),
        "ridge": mean(scorer(tasks.ridge([code]), y)),
        "composed": float((compose(inputs.base_logits, code, family) == y).float().mean() * 100),
        "majority": majority,
    }
    if len(control):  # generate.task makes no control models
        baselines["random_descriptor"] = mean(scorer(control, y))
    zoo = tasks.zoo.vectors.float()
    gaps = torch.cdist(generated.float(), zoo).min(1)
    own_gaps = torch.cdist(torch.cat(reference).float(), zoo).min(1).values
    return {
        "task": code,
        "distance": distance,
        "plain_distance": plain_distance,
        "nearest_tasks": symmetric,
        "generated_mean": mean(scorer(generated, y)),
        "baselines": baselines,
        "memorization": {
            "generated_to_zoo": float(gaps.values.mean()),
            "trained_to_zoo": float(own_gaps.mean()),
            "nearest_row_from_nearest_task": float(
                torch.isin(tasks.zoo.tasks.task[gaps.indices], torch.tensor(symmetric))
                .float()
                .mean()
            ),
        },
    }


def summarize_margins(rows: list[dict], seed: int, bootstrap: BootstrapConfig) -> dict[str, dict]:
    """Each baseline's margin (generated minus baseline, mean over held-out tasks) with its
    bootstrap interval over the held-out tasks (`bootstrap`: the resamples and the confidence of
    every interval, evaluate.bootstrap), and a status: beats (interval above 0), loses (below
    0) or ties (always, for one task: an interval over one task is a point). Baselines the rows lack
    (random_descriptor after generate.task) are left out."""
    generator = generator_for(seed, Purpose.bootstrap, "held_out_tasks")
    draws = torch.randint(0, len(rows), (bootstrap.resamples, len(rows)), generator=generator)
    summary = {}
    for name in [name for name in (REFERENCE, *BASELINES) if name in rows[0]["baselines"]]:
        margins = torch.tensor(
            [row["generated_mean"] - row["baselines"][name] for row in rows], dtype=torch.float64
        )
        low, high = percentile_interval(margins[draws].mean(1), bootstrap.confidence)
        status = TIES if len(rows) < 2 else status_of(low, high)
        summary[name] = {
            "margin": round(float(margins.mean()), 4),
            "low": round(low, 4),
            "high": round(high, 4),
            "status": status,
            "baseline_mean": round(mean([row["baselines"][name] for row in rows]), 4),
        }
    return summary


def generation_flops(
    velocity_params: int, steps: int, guidance: float, evaluations_per_step: int = 1
) -> float:
    """FLOPs of sampling one model: 2 x velocity parameters per velocity call, two calls a step
    under guidance."""
    calls = steps * evaluations_per_step * (1 if guidance == 1.0 else 2)
    return 2.0 * velocity_params * calls


def finetune_steps_for(
    velocity_params: int, sampler_cfg, guidance: float, task_params: int, batch_size: int
) -> int:
    """Fine-tuning steps at the compute of generating one model (Heun calls the velocity twice a
    step)."""
    per_step = 2 if SamplerName(sampler_cfg.name) is SamplerName.heun else 1
    flops = generation_flops(velocity_params, int(sampler_cfg.steps), guidance, per_step)
    return matched_finetune_steps(flops, task_params, batch_size)
