"""Held-out tasks scored: the generated models and every baseline of pdiff.heldout.baselines, per
task, then each baseline's margin to the generated models with a bootstrap interval over the
held-out tasks, and how many labelled fine-tuning steps generation is worth.

A population's accuracy on a task is the mean accuracy (percent) of its models on that task's
evaluation samples (validation tasks on validation samples, or test tasks on test samples). Labels
of the scored tasks are read here only (the evaluate stage); the zoo, the generator and the
generated models never saw a held-out task's signals or labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pdiff.config import BootstrapConfig, SamplerName
from pdiff.data.datasets import Dataset
from pdiff.data.tasknets import accuracy, run_in_batches
from pdiff.evaluation.intervals import percentile_interval
from pdiff.evaluation.verdict import TIES, status_of
from pdiff.heldout.baselines import (
    TaskZoo,
    compose,
    head_columns,
    with_descriptor,
)
from pdiff.heldout.collect import TaskRecipe, head_name, task_network, train_task
from pdiff.heldout.split import EvalSplit, evaluation_arrays
from pdiff.heldout.subsets import SubsetFamily
from pdiff.seeds import Purpose, derive_seed, generator_for
from pdiff.zoo.params import write_vector

REFERENCE = (
    "trained"  # the model trained on the held-out task: the gap to close, not a family to beat
)
MATCHED = (
    "finetuned_matched"  # fine-tuned for the SGD steps that cost what generating one model does
)


def baseline_names(family, finetune_steps: list[int]) -> tuple[str, ...]:
    """Every baseline a row of `family` carries, besides the reference, in the report's order: the
    label swap and composition for a family with that symmetry (subsets), the pooled model for one
    without (variants)."""
    swap, own = (("nearest_symmetric",), ("composed",)) if family.symmetric else ((), ("pooled",))
    return (
        "linear_probe",
        "nearest",
        *swap,
        *(f"finetuned_{steps}" for steps in finetune_steps),
        MATCHED,
        "average_k_nearest",
        "ridge",
        *own,
        "shuffled_descriptor",
        "random_descriptor",
        "majority",
    )


@dataclass
class HeldOutInputs:
    """What scoring the held-out tasks needs besides the zoo."""

    base_data: Dataset  # the base model's data; family=subsets' tasks share its signals
    eval_split: EvalSplit
    net_cfg: object
    base_state: dict[str, torch.Tensor]
    base_net: nn.Module  # the C-class base model (composition)
    recipe: TaskRecipe
    seed: int
    seeds: int  # task seeds of the reference and the probe (as in the zoo)
    k_nearest: int
    finetune_steps: list[int]  # the sweep
    matched_steps: int  # fine-tuning at generation's compute
    pooled: nn.Module | None  # family=variants: the pooled model with the descriptor as input
    project: Callable[[torch.Tensor], torch.Tensor]  # vectors onto the generator's basis


class Scorer:
    """Accuracies of task-network weight vectors on one task's evaluation samples."""

    def __init__(self, inputs: HeldOutInputs, outputs: int):
        self.inputs, self.outputs = inputs, outputs
        self.model, self.spec = task_network(
            inputs.net_cfg, inputs.base_data.input_shape, inputs.base_state, inputs.seed, 0, outputs
        )
        self.model.to(inputs.base_data.x_train.device).eval()

    def __call__(self, vectors: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        scores = []
        for vector in vectors:
            write_vector(self.model, self.spec, vector)
            scores.append(accuracy(self.model, x, y))
        return scores

    def network(self, task_seed: int, start: torch.Tensor | None = None) -> nn.Module:
        """A fresh task network from the shared start (or from weight vector `start`)."""
        inputs = self.inputs
        model, spec = task_network(
            inputs.net_cfg,
            inputs.base_data.input_shape,
            inputs.base_state,
            inputs.seed,
            task_seed,
            self.outputs,
        )
        if start is not None:
            write_vector(model, spec, start)
        return model.to(inputs.base_data.x_train.device)


def mean(values: list[float]) -> float:
    return float(sum(values) / len(values))


def percent(predictions: torch.Tensor, y: torch.Tensor) -> float:
    return float((predictions == y).float().mean() * 100)


def trained_models(
    code: int, data: Dataset, inputs: HeldOutInputs, scorer: Scorer, probe: bool
) -> torch.Tensor:
    """Every checkpoint of the zoo's recipe on the task, one run per task seed [seeds*C, D]; probe:
    the base model frozen, only the head trained (a linear probe)."""
    vectors = []
    for task_seed in range(inputs.seeds):
        model = scorer.network(task_seed)
        if probe:
            head = head_name(model)
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(name.startswith(f"{head}."))
        order = derive_seed(inputs.seed, Purpose.task_order, f"{code}:{task_seed}")
        vectors.append(train_task(model, scorer.spec, data, inputs.recipe, order)[0])
    return torch.cat(vectors)


def finetune_sweep(
    code: int, starts: torch.Tensor, data: Dataset, inputs: HeldOutInputs, scorer: Scorer
) -> dict[int, torch.Tensor]:
    """Each start fine-tuned on the task's training labels, read after each step count of the sweep
    and the matched count: {steps: [starts, D]}."""
    counts = sorted({*inputs.finetune_steps, inputs.matched_steps})
    trained = [count for count in counts if count > 0]
    sweep: dict[int, list[torch.Tensor]] = {count: [] for count in counts}
    for start in starts:
        if 0 in sweep:
            sweep[0].append(start)
        if trained:
            order = derive_seed(inputs.seed, Purpose.task_order, f"{code}:finetune")
            model = scorer.network(0, start)
            vectors, _ = train_task(model, scorer.spec, data, inputs.recipe, order, steps=trained)
            for count, vector in zip(trained, vectors):
                sweep[count].append(vector)
    return {count: torch.stack(vectors) for count, vectors in sweep.items()}


def score_task(
    code: int,
    tasks: TaskZoo,
    generated: torch.Tensor,
    control: torch.Tensor,
    shuffled: torch.Tensor,
    inputs: HeldOutInputs,
    scorer: Scorer,
) -> dict:
    """One held-out task's row: its distance to the training tasks, the generated models' accuracy,
    every baseline's, and how far the generated models lie from the zoo. `control`: the generator's
    models for random unused descriptors; `shuffled`: its models for another held-out task."""
    family = tasks.family
    data = family.task_data(
        code, inputs.base_data, with_test=inputs.eval_split is EvalSplit.test
    ).to(inputs.base_data.x_train.device)
    x, y = evaluation_arrays(data, inputs.eval_split)
    score = lambda vectors: mean(scorer(vectors, x, y))  # noqa: E731
    reference = trained_models(code, data, inputs, scorer, probe=False)
    nearest, plain_distance = tasks.nearest(code, symmetric=False)
    symmetric, distance = tasks.nearest(code, symmetric=True)
    k_nearest, _ = tasks.nearest(code, symmetric=True, k=inputs.k_nearest)
    starts = torch.cat([tasks.oriented(t, code, last_only=True) for t in symmetric])
    sweep = finetune_sweep(code, starts, data, inputs, scorer)
    average = torch.cat([tasks.oriented(t, code, last_only=True) for t in k_nearest]).mean(
        0, keepdim=True
    )
    counts = torch.bincount(y, minlength=family.outputs).float()
    baselines = {
        REFERENCE: score(reference),
        "linear_probe": score(trained_models(code, data, inputs, scorer, probe=True)),
        "nearest": score(torch.cat([tasks.rows(t) for t in nearest])),
        **{f"finetuned_{steps}": score(sweep[steps]) for steps in inputs.finetune_steps},
        MATCHED: score(sweep[inputs.matched_steps]),
        "average_k_nearest": score(average),
        "ridge": score(tasks.ridge([code])),
        "majority": float(counts.max() / counts.sum() * 100),
    }
    if isinstance(family, SubsetFamily):
        baselines["nearest_symmetric"] = score(
            torch.cat([tasks.oriented(t, code) for t in symmetric])
        )
        with torch.no_grad():
            logits = run_in_batches(inputs.base_net, x)
        baselines["composed"] = percent(compose(logits, code, family), y)
    if inputs.pooled is not None:
        with torch.no_grad():
            logits = run_in_batches(inputs.pooled, with_descriptor(x, family.descriptor([code])[0]))
        baselines["pooled"] = percent(logits.argmax(1), y)
    if len(shuffled):
        baselines["shuffled_descriptor"] = score(shuffled)
    if len(control):  # generate.task makes no control models
        baselines["random_descriptor"] = score(control)
    return {
        "task": code,
        "region": family.region(code, tasks.codes),
        "distance": round(float(distance), 4),
        "plain_distance": round(float(plain_distance), 4),
        "nearest_tasks": symmetric,
        "generated_mean": score(generated),
        "baselines": baselines,
        "memorization": memorization(generated, reference, tasks, inputs.project, symmetric),
    }


def memorization(
    generated: torch.Tensor,
    trained: torch.Tensor,
    tasks: TaskZoo,
    project: Callable[[torch.Tensor], torch.Tensor],
    nearest: list[int],
) -> dict[str, float]:
    """L2 distance to the nearest zoo checkpoint of the generated models and of models trained on the
    task, projected onto the generator's basis first (the space generated models live in): whole
    vectors, and the head alone. The share of generated models whose nearest checkpoint belongs to a
    nearest training task."""
    zoo = tasks.vectors
    head = head_columns(tasks.zoo.spec, tasks.head)
    trained = project(trained.float())
    whole = torch.cdist(generated.float(), zoo).min(1)
    return {
        "generated_to_zoo": float(whole.values.mean()),
        "trained_to_zoo": float(torch.cdist(trained, zoo).min(1).values.mean()),
        "generated_head_to_zoo": float(
            torch.cdist(generated.float()[:, head], zoo[:, head]).min(1).values.mean()
        ),
        "trained_head_to_zoo": float(
            torch.cdist(trained[:, head], zoo[:, head]).min(1).values.mean()
        ),
        "nearest_row_from_nearest_task": float(
            torch.isin(tasks.zoo.tasks.task[whole.indices], torch.tensor(nearest)).float().mean()
        ),
    }


def summarize_margins(
    rows: list[dict], names: tuple[str, ...], seed: int, bootstrap: BootstrapConfig
) -> dict[str, dict]:
    """Each baseline's margin (generated minus baseline, mean over held-out tasks) with its
    bootstrap interval over the held-out tasks (`bootstrap`: the resamples and the confidence of
    every interval, evaluate.bootstrap), and a status: beats (interval above 0), loses (below
    0) or ties (always, for one task: an interval over one task is a point). Baselines the rows lack
    (the controls after generate.task) are left out."""
    generator = generator_for(seed, Purpose.bootstrap, "held_out_tasks")
    draws = torch.randint(0, len(rows), (bootstrap.resamples, len(rows)), generator=generator)
    summary = {}
    for name in [name for name in (REFERENCE, *names) if name in rows[0]["baselines"]]:
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


def worth_steps(rows: list[dict], finetune_steps: list[int], matched_steps: int) -> dict:
    """How many labelled SGD steps from the nearest task generation is worth: where the generated
    models' mean accuracy meets the sweep's (linear between the sweep's step counts; None above its
    last, 0 at or below its start)."""
    counts = sorted({*finetune_steps, matched_steps})
    name = lambda steps: f"finetuned_{steps}" if steps in finetune_steps else MATCHED  # noqa: E731
    curve = [mean([row["baselines"][name(steps)] for row in rows]) for steps in counts]
    generated = mean([row["generated_mean"] for row in rows])
    steps: float | None = None
    if generated <= curve[0]:
        steps = float(counts[0])
    for (low, high), (a, b) in zip(zip(counts, counts[1:]), zip(curve, curve[1:])):
        if steps is None and a < generated <= b:
            steps = low + (generated - a) / (b - a) * (high - low)
    return {
        "steps": None if steps is None else round(steps, 1),
        "beyond": counts[-1] if steps is None and generated > max(curve) else None,
        "curve": {str(count): round(value, 4) for count, value in zip(counts, curve)},
        "generated": round(generated, 4),
    }


def generation_flops(
    velocity_params: int, steps: int, guidance: float, evaluations_per_step: int = 1
) -> float:
    """FLOPs of sampling one model: 2 x velocity parameters per velocity call, two calls a step
    under guidance."""
    calls = steps * evaluations_per_step * (1 if guidance == 1.0 else 2)
    return 2.0 * velocity_params * calls


def matched_finetune_steps(generation_flops: float, task_params: int, batch_size: int) -> int:
    """SGD steps of fine-tuning that cost what generating one model costs (6 x params x batch FLOPs
    a step)."""
    return max(1, round(generation_flops / (6 * task_params * batch_size)))


def finetune_steps_for(
    velocity_params: int, sampler_cfg, guidance: float, task_params: int, batch_size: int
) -> int:
    """Fine-tuning steps at the compute of generating one model (Heun calls the velocity twice a
    step)."""
    per_step = 2 if SamplerName(sampler_cfg.name) is SamplerName.heun else 1
    flops = generation_flops(velocity_params, int(sampler_cfg.steps), guidance, per_step)
    return matched_finetune_steps(flops, task_params, batch_size)
