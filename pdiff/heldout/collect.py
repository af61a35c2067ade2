"""A zoo of many tasks: collection run r of task.collect.runs (one SLURM array task) trains its
share of the (training task, seed) pairs and keeps family.checkpoints checkpoints of each, with the
task's descriptor.

Every task network starts from the shared base model: its hidden layers, and its head when the task
has the base model's outputs (family=variants); otherwise (family=subsets) a head initialised from
the task seed alone, the same for every task. The runs are aligned by their shared start, not
permuted afterwards. A run saves its finished pairs after each
one (a resume point), so a requeued or resubmitted array task goes on from the first pair it had not
finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pdiff import atomic
from pdiff.data.datasets import Dataset
from pdiff.data.tasknets import accuracy, build_task_net
from pdiff.heldout.families import TaskFamily
from pdiff.seeds import Purpose, derive_seed
from pdiff.tracking import stage_progress
from pdiff.zoo.collect import sgd_step, training_batch
from pdiff.zoo.params import ParamSpec, read_vector, select_parameters


def head_name(model: nn.Module) -> str:
    """The module name of the network's last Linear layer: the head a task replaces."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]


def task_network(
    net_cfg,
    input_shape: tuple[int, ...],
    base_state: dict[str, torch.Tensor],
    seed: int,
    task_seed: int,
    outputs: int,
) -> tuple[nn.Module, ParamSpec]:
    """A network of `outputs` outputs with the base model's hidden layers; its head is the base
    model's when the shapes agree, else initialised from (seed, task_seed) only."""
    torch.manual_seed(derive_seed(seed, Purpose.task_head, task_seed))
    model = build_task_net(net_cfg, input_shape, outputs)
    state = model.state_dict()
    state.update(
        {key: value for key, value in base_state.items() if value.shape == state[key].shape}
    )
    model.load_state_dict(state)
    return model, select_parameters(model, ["*"])


@dataclass(frozen=True)
class TaskRecipe:
    """How every task network of a zoo trains: SGD (task.collect's lr, momentum, weight decay, batch
    size) for family.epochs epochs on the task's labels, then one checkpoint after each of
    family.checkpoints more."""

    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    epochs: int
    checkpoints: int

    @classmethod
    def from_config(cls, task_cfg) -> TaskRecipe:
        collect, family = task_cfg.collect, task_cfg.family
        return cls(
            collect.lr,
            collect.momentum,
            collect.weight_decay,
            collect.batch_size,
            family.epochs,
            family.checkpoints,
        )


def train_task(
    model: nn.Module,
    spec: ParamSpec,
    data: Dataset,
    recipe: TaskRecipe,
    order_seed: int,
    steps: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SGD on the task's (data.x_train, data.y_train), on the parameters that require gradients:
    vectors [C, D] after each of the recipe's checkpoint epochs and their validation accuracies [C]
    (percent). With `steps` (increasing): a checkpoint after each of those many steps."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    per_epoch = max(len(data.y_train) // recipe.batch_size, 1)
    ends = (
        steps
        if steps is not None
        else [(recipe.epochs + c + 1) * per_epoch for c in range(recipe.checkpoints)]
    )
    vectors, accuracies, step = [], [], 0
    model.train()
    for end in ends:
        while step < end:
            sgd_step(
                model,
                optimizer,
                *training_batch(
                    data.x_train, data.y_train, step, recipe.batch_size, order_seed, None
                ),
            )
            step += 1
        model.eval()
        vectors.append(read_vector(model, spec).clone().cpu())
        accuracies.append(accuracy(model, data.x_val, data.y_val))
        model.train()
    model.eval()
    return torch.stack(vectors), torch.tensor(accuracies, dtype=torch.float64)


def run_pairs(train_codes: list[int], seeds: int, index: int, runs: int) -> list[tuple[int, int]]:
    """Collection run `index`'s (code, task seed) pairs: a contiguous share of every pair, in code
    order."""
    pairs = [(code, s) for code in train_codes for s in range(seeds)]
    return pairs[index * len(pairs) // runs : (index + 1) * len(pairs) // runs]


def collect_tasks(
    pairs: list[tuple[int, int]],
    family: TaskFamily,
    data: Dataset,
    net_cfg,
    base_state: dict,
    recipe: TaskRecipe,
    seed: int,
    state_path: Path,
) -> dict[str, torch.Tensor]:
    """Checkpoints of every pair: params [P*C, D], val_accuracy, descriptor [P*C, d], task,
    task_seed; the pairs finished so far are saved to `state_path` after each one and skipped on a
    resume. `data` is the base model's; each task's own comes from the family."""
    done = atomic.read_safetensors(state_path) if state_path.is_file() else {}
    finished = len(done.get("task", [])) // max(recipe.checkpoints, 1)
    chunks = [done] if done else []
    device = data.x_train.device
    with stage_progress("collect tasks", total=len(pairs), completed=finished) as bar:
        for code, task_seed in pairs[finished:]:
            own = family.task_data(code, data).to(device)
            model, spec = task_network(
                net_cfg, data.input_shape, base_state, seed, task_seed, family.outputs
            )
            model.to(device)
            order = derive_seed(seed, Purpose.task_order, f"{code}:{task_seed}")
            vectors, accuracies = train_task(model, spec, own, recipe, order)
            count = len(vectors)
            chunks.append(
                {
                    "params": vectors,
                    "val_accuracy": accuracies,
                    "descriptor": family.descriptor([code] * count),
                    "task": torch.full((count,), code, dtype=torch.int64),
                    "task_seed": torch.full((count,), task_seed, dtype=torch.int64),
                }
            )
            joined = {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}
            chunks = [joined]
            atomic.write_safetensors(state_path, joined)
            bar.advance(status=f"task {code} acc {float(accuracies[-1]):.1f}%")
    return chunks[0] if chunks else {}
