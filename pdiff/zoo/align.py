"""Whole-model zoos from several runs, aligned before the zoo is written: every run's hidden units
are permuted onto run 0 (weight matching between the runs' last checkpoints), one permutation per
run, so each run's trajectory keeps its shape and every checkpoint computes the same function as
before."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from pdiff import atomic
from pdiff.zoo.params import ParamSpec
from pdiff.zoo.permutation_groups import permutation_groups
from pdiff.zoo.rebasin import apply_permutations, weight_matching

log = logging.getLogger(__name__)


def align_runs(
    model: nn.Sequential, spec: ParamSpec, paths: list[Path], directory: Path
) -> tuple[list[Path], list[dict]]:
    """Aligned copies of runs 1.. (run 0 is the reference, kept as it is) in `directory`; returns
    the paths to merge, in run order, and per run the L2 distance of its last checkpoint to run 0's
    before and after."""
    groups = permutation_groups(model)
    reference_vector = atomic.read_safetensors(paths[0])["params"][-1]
    reference = _state(spec, reference_vector[None])
    aligned, record = [paths[0]], [{"run": 0, "l2_before": 0.0, "l2_after": 0.0}]
    for index, path in enumerate(paths[1:], start=1):
        target = directory / path.name
        tensors = atomic.read_safetensors(path)
        last = tensors["params"][-1:]
        perms = weight_matching(groups, reference, _state(spec, last), seed=index)
        params = torch.cat(
            [
                spec.flatten(apply_permutations(groups, _state(spec, row[None]), perms))[None]
                for row in tensors["params"]
            ]
        )
        record.append(
            {
                "run": index,
                "l2_before": round(float((last[0] - reference_vector).norm()), 6),
                "l2_after": round(float((params[-1] - reference_vector).norm()), 6),
            }
        )
        if not target.is_file():
            atomic.write_safetensors(
                target,
                {"params": params, "val_accuracy": tensors["val_accuracy"]},
                metadata={**atomic.read_safetensors_metadata(path), "aligned_to": "run 0"},
            )
        aligned.append(target)
        log.info(
            "collect: run %d aligned onto run 0: L2 %.3f -> %.3f",
            index,
            record[-1]["l2_before"],
            record[-1]["l2_after"],
        )
    return aligned, record


def _state(spec: ParamSpec, row: torch.Tensor) -> dict[str, torch.Tensor]:
    """One [1, D] vector as a state dict of the spec's parameters (model shapes)."""
    return {name: value[0] for name, value in spec.unflatten(row).items()}
