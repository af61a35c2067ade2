"""Permutation alignment of task networks by weight matching (Ainsworth et al., "Git Re-Basin", ICLR
2023, Alg. 1).

`weight_matching` finds the hidden-unit permutations (of the groups that permutation_groups.py
lists) that bring one state dict closest (in L2) to a reference by coordinate descent over linear
assignment problems; `apply_permutations` applies them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from pdiff.zoo.permutation_groups import PermutationGroup, PermutedAxis, permutation_groups


def _block_index(perm: Tensor, block: int) -> Tensor:
    if block == 1:
        return perm
    return (perm[:, None] * block + torch.arange(block, device=perm.device)).reshape(-1)


def _permute(tensor: Tensor, axis: int, perm: Tensor, block: int) -> Tensor:
    return tensor.index_select(axis, _block_index(perm.to(tensor.device), block))


def _touching(groups: Sequence[PermutationGroup]) -> dict[str, list[tuple[int, PermutedAxis]]]:
    touching: dict[str, list[tuple[int, PermutedAxis]]] = {}
    for index, group in enumerate(groups):
        for entry in group.axes:
            touching.setdefault(entry.key, []).append((index, entry))
    return touching


def _check_perms(groups: Sequence[PermutationGroup], perms: Sequence[Tensor]) -> None:
    if len(perms) != len(groups):
        raise ValueError(f"got {len(perms)} permutations for {len(groups)} groups")
    for group, perm in zip(groups, perms):
        if perm.shape != (group.size,) or not torch.equal(
            perm.sort().values.cpu(), torch.arange(group.size)
        ):
            raise ValueError(
                f"the permutation for group {group.name!r} is not a permutation of {group.size} units"
            )


def weight_matching(
    groups: Sequence[PermutationGroup],
    reference: Mapping[str, Tensor],
    other: Mapping[str, Tensor],
    max_iterations: int = 100,
    seed: int = 0,
) -> list[Tensor]:
    """Permutations of `other`'s hidden units maximising its inner product with `reference` (so
    minimising the L2 distance), by coordinate descent: each group's linear assignment with all
    other groups held fixed, groups in a seeded random order, until a full pass improves nothing.
    Returns one int64 index tensor per group."""
    touching = _touching(groups)
    ref: dict[str, Tensor] = {}
    oth: dict[str, Tensor] = {}
    for key, entries in touching.items():
        if key not in reference or key not in other:
            where = "reference" if key not in reference else "other"
            raise ValueError(f"state_dict key {key!r} is missing from the {where} state dict")
        ref[key] = reference[key].detach().to("cpu", torch.float64)
        oth[key] = other[key].detach().to("cpu", torch.float64)
        if ref[key].shape != oth[key].shape:
            raise ValueError(
                f"{key!r} has shape {tuple(ref[key].shape)} in the reference, "
                f"{tuple(oth[key].shape)} in the other state dict"
            )
        for index, entry in entries:
            if ref[key].shape[entry.axis] != groups[index].size * entry.block:
                raise ValueError(
                    f"{key!r} axis {entry.axis} does not have "
                    f"{groups[index].size} x {entry.block} entries"
                )

    perms = [torch.arange(group.size) for group in groups]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(max_iterations):
        progress = False
        for index in torch.randperm(len(groups), generator=generator).tolist():
            group = groups[index]
            cost = torch.zeros(group.size, group.size, dtype=torch.float64)
            for entry in group.axes:
                fixed = oth[entry.key]
                for other_index, other_entry in touching[entry.key]:
                    if other_index != index:
                        fixed = _permute(
                            fixed, other_entry.axis, perms[other_index], other_entry.block
                        )
                rows_ref = ref[entry.key].movedim(entry.axis, 0).reshape(group.size, -1)
                rows_other = fixed.movedim(entry.axis, 0).reshape(group.size, -1)
                cost += rows_ref @ rows_other.T
            _, columns = linear_sum_assignment(cost.numpy(), maximize=True)
            new = torch.as_tensor(columns, dtype=torch.int64)
            units = torch.arange(group.size)
            gain = float(cost[units, new].sum() - cost[units, perms[index]].sum())
            if gain > 1e-12 * max(1.0, float(cost.abs().max())):
                perms[index], progress = new, True
        if not progress:
            break
    return perms


def apply_permutations(
    groups: Sequence[PermutationGroup], state: Mapping[str, Tensor], perms: Sequence[Tensor]
) -> dict[str, Tensor]:
    """A copy of `state` with each group's units reordered (unit i of the result is unit perms[g][i]
    of `state`)."""
    _check_perms(groups, perms)
    result = dict(state)
    for key, entries in _touching(groups).items():
        if key not in result:
            raise ValueError(f"state_dict key {key!r} is missing")
        tensor = result[key]
        for index, entry in entries:
            tensor = _permute(tensor, entry.axis, perms[index], entry.block)
        result[key] = tensor
    return result


def align(
    model: nn.Sequential,
    reference: Mapping[str, Tensor],
    other: Mapping[str, Tensor],
    seed: int = 0,
) -> dict[str, Tensor]:
    """`other` (a state dict of `model`'s architecture) with its hidden units permuted to match
    `reference`."""
    groups = permutation_groups(model)
    return apply_permutations(groups, other, weight_matching(groups, reference, other, seed=seed))
