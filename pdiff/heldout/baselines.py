"""What a held-out task gets without the generator: the models of the nearest training tasks (with
and without the family's symmetry), those fine-tuned, their average, a ridge map from descriptor to
weights, and a model composed from the C-class base model. Each returns weight vectors of the binary
task network (or, for composition, predictions)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.linear_model import RidgeCV

from pdiff.heldout.families import SubsetFamily
from pdiff.zoo.params import ParamSpec
from pdiff.zoo.store import ParamZoo

RIDGE_ALPHAS = tuple(
    10.0**e for e in range(-3, 5)
)  # chosen per zoo by leave-one-out over its training rows


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


@dataclass
class TaskZoo:
    """A zoo of many tasks seen by task: the rows of each training code, and how to orient them
    toward a code."""

    zoo: ParamZoo
    family: SubsetFamily
    head: str

    @property
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
        is nearer."""
        plain = int(self.family.distances(target, [code])[0])
        rows = self.rows(code, last_only)
        return (
            swap_outputs(rows, self.zoo.spec, self.head)
            if plain > self.family.classes - plain
            else rows
        )

    def nearest(self, target: int, symmetric: bool, k: int | None = None) -> tuple[list[int], int]:
        """The nearest training codes to `target` (all tied at the least distance, or the k nearest
        in code order), and that least distance."""
        codes = self.codes
        distances = self.family.distances(target, codes, symmetric)
        if k is not None:
            order = sorted(range(len(codes)), key=lambda i: (int(distances[i]), codes[i]))[:k]
            return [codes[i] for i in order], int(distances[order[0]])
        least = int(distances.min())
        return [code for code, d in zip(codes, distances.tolist()) if d == least], least

    def ridge(self, targets: list[int]) -> torch.Tensor:
        """Ridge regression from descriptor to weights, fitted on every training row ({-1, 1} bits;
        the penalty chosen by leave-one-out); its predicted vector for each target [T, D]. Ridge is
        rotation-equivariant in its outputs, so this equals ridge on the zoo's full PCA
        coefficients."""
        x = (2 * self.zoo.tasks.descriptor.double() - 1).numpy()
        y = self.zoo.vectors.double().numpy()
        model = RidgeCV(alphas=RIDGE_ALPHAS).fit(x, y)
        wanted = (2 * self.family.descriptor(targets).double() - 1).numpy()
        return torch.from_numpy(model.predict(wanted)).float()


def compose(base_logits: torch.Tensor, code: int, family: SubsetFamily) -> torch.Tensor:
    """Binary predictions composed from a C-class model's logits [N, C]: 1 when the subset's classes
    hold more than half of the predicted probability."""
    members = family.descriptor([code])[0].bool().to(base_logits.device)
    return (base_logits.softmax(1)[:, members].sum(1) > 0.5).long()


def matched_finetune_steps(generation_flops: float, task_params: int, batch_size: int) -> int:
    """SGD steps of fine-tuning that cost what generating one model costs (6 x params x batch FLOPs
    a step)."""
    return max(1, round(generation_flops / (6 * task_params * batch_size)))
