"""What a held-out task gets without the generator: the models of the nearest training tasks (with
and without the family's symmetry), their average, a ridge map from descriptor to weights, and,
where the family allows, a model composed from the C-class base model (subsets) or one pooled model
that takes the descriptor as an input (variants). Each returns weight vectors of the task network
or predictions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from pdiff.data.datasets import Dataset
from pdiff.data.tasknets import build_task_net
from pdiff.heldout.collect import TaskRecipe
from pdiff.heldout.families import SubsetFamily, TaskFamily
from pdiff.heldout.ridge import TaskRidge, fit_task_ridge
from pdiff.seeds import Purpose, derive_seed
from pdiff.zoo.collect import sgd_step, training_batch
from pdiff.zoo.params import ParamSpec
from pdiff.zoo.store import ParamZoo

POOLED_EPOCHS = 3  # the pooled model's passes over every training task's signals


def swap_outputs(vectors: torch.Tensor, spec: ParamSpec, head: str) -> torch.Tensor:
    """The vectors with the head's two output rows (weight rows and biases) swapped: the complement
    task's model becomes this task's."""
    swapped = vectors.clone()
    for entry in spec.entries:
        if entry.name in (f"{head}.weight", f"{head}.bias"):
            block = swapped[:, entry.offset : entry.offset + entry.numel].view(
                len(vectors), *entry.shape
            )
            block.copy_(block.flip(1))
    return swapped


def head_columns(spec: ParamSpec, head: str) -> torch.Tensor:
    """The indices of the head's parameters (its weight and bias) in a flat vector."""
    return torch.cat(
        [
            torch.arange(entry.offset, entry.offset + entry.numel)
            for entry in spec.entries
            if entry.name in (f"{head}.weight", f"{head}.bias")
        ]
    )


@dataclass
class TaskZoo:
    """A zoo of many tasks seen by task: the rows of each training task, and how to orient them
    toward a task (the label swap, in a family with that symmetry)."""

    zoo: ParamZoo
    family: TaskFamily
    head: str

    @cached_property
    def codes(self) -> list[int]:
        return sorted(set(self.zoo.tasks.task.tolist()))

    def rows(self, code: int, last_only: bool = False) -> torch.Tensor:
        """The checkpoints of training task `code` [r, D] (last_only: each task seed's last one)."""
        mask = self.zoo.tasks.task == code
        if last_only:
            index = torch.nonzero(mask).flatten()
            seeds = self.zoo.tasks.task_seed[index]
            keep = [int(index[seeds == s].max()) for s in sorted(set(seeds.tolist()))]
            return self.zoo.vectors[keep].float()
        return self.zoo.vectors[mask].float()

    def oriented(self, code: int, target: int, last_only: bool = False) -> torch.Tensor:
        """Training task `code`'s models turned toward `target`: outputs swapped when the complement
        is nearer (family=subsets)."""
        rows = self.rows(code, last_only)
        if not isinstance(self.family, SubsetFamily):
            return rows
        plain = int(self.family.distances(target, [code])[0])
        return (
            swap_outputs(rows, self.zoo.spec, self.head)
            if plain > self.family.classes - plain
            else rows
        )

    def nearest(
        self, target: int, symmetric: bool, k: int | None = None
    ) -> tuple[list[int], float]:
        """The nearest training tasks to `target` (all tied at the least distance, or the k nearest
        in id order), and that least distance."""
        codes = self.codes
        distances = self.family.distances(target, codes, symmetric).tolist()
        if k is not None:
            order = sorted(range(len(codes)), key=lambda i: (distances[i], codes[i]))[:k]
            return [codes[i] for i in order], distances[order[0]]
        least = min(distances)
        return [code for code, d in zip(codes, distances) if d == least], least

    def encoded(self, codes: list[int] | torch.Tensor) -> torch.Tensor:
        """The descriptors ridge reads: {-1, 1} bits for subsets, the settings for variants."""
        descriptors = self.family.descriptor(codes).double()
        return 2 * descriptors - 1 if isinstance(self.family, SubsetFamily) else descriptors

    @cached_property
    def ridge_map(self) -> TaskRidge:
        """Ridge from descriptor to weights over every training row, its penalty chosen leaving out
        one training task at a time (the held-out tasks are whole tasks too); fitted once per zoo."""
        return fit_task_ridge(self.encoded(self.zoo.tasks.task), self.zoo.vectors)

    @property
    def ridge_alpha(self) -> float:
        """The penalty leave-one-task-out chose."""
        return self.ridge_map.alpha

    def ridge(self, targets: list[int]) -> torch.Tensor:
        """The ridge map's vector for each target [T, D]. Ridge is rotation-equivariant in its
        outputs, so this equals ridge on the zoo's full PCA coefficients."""
        return self.ridge_map(self.encoded(targets)).float()

    @cached_property
    def vectors(self) -> torch.Tensor:
        """Every checkpoint of the zoo in float32 [K, D] (the memorisation distances' reference)."""
        return self.zoo.vectors.float()


def compose(base_logits: torch.Tensor, code: int, family: SubsetFamily) -> torch.Tensor:
    """Binary predictions composed from a C-class model's logits [N, C]: 1 when the subset's classes
    hold more than half of the predicted probability."""
    members = family.descriptor([code])[0].bool().to(base_logits.device)
    return (base_logits.softmax(1)[:, members].sum(1) > 0.5).long()


def train_pooled(
    family: TaskFamily,
    train: list[int],
    data: Dataset,
    net_cfg,
    recipe: TaskRecipe,
    seed: int,
) -> torch.nn.Module:
    """One network for every training task, the task's descriptor appended to each signal: trained
    with the zoo's SGD recipe for POOLED_EPOCHS passes over all their training signals."""
    device = data.x_train.device
    parts = [family.task_data(task, data) for task in train]
    x = torch.cat(
        [
            with_descriptor(part.x_train, family.descriptor([task])[0])
            for task, part in zip(train, parts)
        ]
    ).to(device)
    y = torch.cat([part.y_train for part in parts]).to(device)
    torch.manual_seed(derive_seed(seed, Purpose.task_pooled))
    model = build_task_net(net_cfg, tuple(x.shape[1:]), family.outputs).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    order = derive_seed(seed, Purpose.task_pooled, "order")
    model.train()
    for step in range(POOLED_EPOCHS * max(len(y) // recipe.batch_size, 1)):
        sgd_step(model, optimizer, *training_batch(x, y, step, recipe.batch_size, order, None))
    return model.eval()


def with_descriptor(x: torch.Tensor, descriptor: torch.Tensor) -> torch.Tensor:
    """Signals [N, L] with the task's descriptor [d] appended to each: the pooled model's input."""
    return torch.cat([x, descriptor.to(x).expand(len(x), -1)], 1)
