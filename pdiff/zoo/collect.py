"""Base training and checkpoint collection of the selected subset (frozen rest, resumable)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pdiff import atomic
from pdiff.config import Precision
from pdiff.data.augment import Augmentation
from pdiff.data.datasets import Dataset
from pdiff.data.tasknets import accuracy, run_in_batches
from pdiff.errors import ConfigError, TrainingDiverged
from pdiff.seeds import Purpose, generator_for
from pdiff.tracking import stage_progress
from pdiff.training.batches import batch_indices
from pdiff.training.devices import Execution, autocast
from pdiff.zoo.params import (
    ParamSpec,
    is_whole_model,
    read_vector,
    running_statistics,
    split_network,
    write_vector,
)
from pdiff.zoo.permutation_groups import permutation_groups

log = logging.getLogger(__name__)
FP32_EAGER = Execution()  # the task network in fp32, not compiled


def sgd_step(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: Precision = Precision.fp32,
) -> torch.Tensor:
    """One SGD step on (x, y), the forward under `precision`'s autocast; returns the loss tensor (no
    host sync)."""
    with autocast(x.device, precision):
        loss = F.cross_entropy(module(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def training_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    step: int,
    batch_size: int,
    seed: int,
    augment: Augmentation | None,
):
    """The batch of a global step (a permutation per epoch, set by the seed), augmented if asked, on
    x's device."""
    idx = batch_indices(step, len(x), batch_size, seed).to(x.device)
    xb = x[idx]
    if augment:
        xb = augment(xb, generator_for(seed, Purpose.augment, step))
    return xb, y[idx]


def check_runs(
    collect_cfg, model: nn.Module, spec: ParamSpec, recalibrate_batches: int = 0
) -> None:
    """What task.collect.runs and task.collect.align need of the network, checked before any work."""
    runs, whole = collect_cfg.runs, is_whole_model(model, spec)
    uncarried = [name for name in running_statistics(model) if name not in spec.names]
    if runs > 1 and whole and uncarried and not recalibrate_batches:
        raise ConfigError(
            f"task.collect.runs={runs} trains every run of a whole-model zoo from scratch, but task.net "
            f"has BatchNorm running statistics ({', '.join(uncarried[:3])}, ...) that the vectors do not "
            "carry, so the runs would share run 0's: set task.param.statistics=true (each checkpoint "
            "keeps its own, generators generate them) or evaluate.recalibrate_batches > 0 (every model "
            "re-estimates them on training data), or use task.collect.runs=1"
        )
    if not collect_cfg.align:
        return
    if not whole or runs < 2:
        raise ConfigError(
            f"task.collect.align=true needs a whole-model zoo (task.param.layers=['*']) from "
            f"task.collect.runs >= 2 (runs={runs}, whole model: {whole}): runs that share a base "
            "model are already aligned"
        )
    try:
        permutation_groups(model)
    except ValueError as error:
        raise ConfigError(f"task.collect.align=true cannot align task.net: {error}") from error


def base_lr_factor(base_cfg, steps_per_epoch: int):
    """The lr multiplier at each step: p-diff's step decay at `milestones` (epochs), or cosine decay
    without them."""
    total = base_cfg.epochs * steps_per_epoch
    milestones = [m * steps_per_epoch for m in base_cfg.milestones]
    if milestones:
        return lambda step: base_cfg.gamma ** sum(step >= m for m in milestones)
    return lambda step: 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))


def train_base(
    model: nn.Module,
    data: Dataset,
    base_cfg,
    augment: Augmentation | None,
    seed: int,
    state_path: Path,
    execution: Execution = FP32_EAGER,
) -> float:
    """SGD with cosine decay on all parameters; saves a resume point each epoch. Returns validation
    accuracy (%)."""
    steps_per_epoch = max(len(data.x_train) // base_cfg.batch_size, 1)
    total = base_cfg.epochs * steps_per_epoch
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=base_cfg.lr,
        momentum=base_cfg.momentum,
        weight_decay=base_cfg.weight_decay,
        nesterov=base_cfg.momentum > 0,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, base_lr_factor(base_cfg, steps_per_epoch)
    )
    step = 0
    if state_path.is_file():
        state = atomic.read_torch(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step = int(state["step"])
        log.info("base training resumes at epoch %d/%d", step // steps_per_epoch, base_cfg.epochs)
    model.train()
    forward = execution.training_forward(model)
    with stage_progress(
        "base training", total=base_cfg.epochs, completed=step // steps_per_epoch
    ) as bar:
        while step < total:
            for _ in range(steps_per_epoch):
                loss = sgd_step(
                    forward,
                    optimizer,
                    *training_batch(
                        data.x_train, data.y_train, step, base_cfg.batch_size, seed, augment
                    ),
                    execution.precision,
                )
                schedule.step()
                step += 1
            loss = float(loss)  # once per epoch
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"base training diverged in epoch {step // steps_per_epoch} (loss {loss}); "
                    f"lower task.base.lr={base_cfg.lr}"
                )
            atomic.write_torch(
                state_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "step": step,
                },
            )
            bar.advance(status=f"loss {loss:.4f}")
    model.eval()
    with execution.autocast(data.x_val.device):
        return accuracy(model, data.x_val, data.y_val)


def checkpoint_interval(collect_cfg, n_train: int) -> int:
    """SGD steps between two checkpoints: task.collect.steps_per_checkpoint, or one epoch when it is
    0."""
    return collect_cfg.steps_per_checkpoint or max(n_train // collect_cfg.batch_size, 1)


def _state_part(state_path: Path, part: int) -> Path:
    """The checkpoints taken between two resume points (each resume point writes only its own new
    ones)."""
    return state_path.with_name(f"{state_path.stem}.part{part}.safetensors")


def _write_part(path: Path, chunk: dict[str, torch.Tensor]) -> None:
    """Write a part, unless an interruption between it and its resume point left the same part there
    already (collection is deterministic: a redone part equals it, and a part is then written once).
    """
    if path.is_file():
        kept = atomic.read_safetensors(path)
        if kept.keys() == chunk.keys() and all(torch.equal(kept[key], chunk[key]) for key in chunk):
            return
        log.warning(
            "%s held other checkpoints than the resumed collection made; it is rewritten", path.name
        )
    atomic.write_safetensors(path, chunk)


def collect_checkpoints(
    model: nn.Module,
    spec: ParamSpec,
    data: Dataset,
    collect_cfg,
    k: int,
    augment: Augmentation | None,
    seed: int,
    state_path: Path,
    execution: Execution = FP32_EAGER,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep training only `spec`'s parameters (all norm statistics frozen) and take K snapshots.

    Returns vectors [K, D] and their validation accuracies [K] (percent; test labels are never read
    here). Resumes from `state_path` (the optimiser) and its parts (the checkpoints, written once
    each).
    """
    model.eval()
    named = dict(model.named_parameters())
    for name, param in named.items():
        param.requires_grad_(name in spec.parameter_names)
    head, tail = split_network(model, spec.entries[0].name)
    with torch.no_grad(), execution.autocast(data.x_val.device):
        val_features = run_in_batches(head, data.x_val)
        train_features = None if augment else run_in_batches(head, data.x_train)
    trained = tail if train_features is not None else model
    forward = execution.training_forward(trained)
    train_x = train_features if train_features is not None else data.x_train
    optimizer = torch.optim.SGD(
        [named[name] for name in spec.parameter_names],
        lr=collect_cfg.lr,
        momentum=collect_cfg.momentum,
        weight_decay=collect_cfg.weight_decay,
    )
    steps_per_checkpoint = checkpoint_interval(collect_cfg, len(data.x_train))
    vectors, accuracies, parts, saved = [], [], 0, 0
    if state_path.is_file():
        state = atomic.read_torch(state_path)
        parts = int(
            state.get("parts", 0)
        )  # a resume point from before parts holds its checkpoints itself
        for chunk in [
            atomic.read_safetensors(_state_part(state_path, part)) for part in range(parts)
        ] or [state]:
            vectors += list(chunk["vectors"].to(data.x_train.device))
            accuracies += list(chunk["accuracy"])
        saved = len(vectors) if parts else 0
        write_vector(model, spec, vectors[-1].cpu())
        optimizer.load_state_dict(state["optimizer"])
        log.info("collection resumes at checkpoint %d/%d", len(vectors), k)
    with stage_progress("collect checkpoints", total=k, completed=len(vectors)) as bar:
        while len(vectors) < k:
            start = len(vectors) * steps_per_checkpoint
            for step in range(start, start + steps_per_checkpoint):
                sgd_step(
                    forward,
                    optimizer,
                    *training_batch(
                        train_x, data.y_train, step, collect_cfg.batch_size, seed, augment
                    ),
                    execution.precision,
                )
            vector = read_vector(model, spec).clone()
            if not vector.isfinite().all():
                raise TrainingDiverged(
                    f"collection diverged before checkpoint {len(vectors) + 1}/{k}: the parameters became non-finite; "
                    f"lower task.collect.lr={collect_cfg.lr} (checkpoints so far stay in {state_path.name})"
                )
            vectors.append(vector)
            with execution.autocast(data.x_val.device):
                accuracies.append(
                    torch.tensor(accuracy(tail, val_features, data.y_val), dtype=torch.float64)
                )
            if len(vectors) % collect_cfg.save_state_every == 0 or len(vectors) == k:
                _write_part(
                    _state_part(state_path, parts),
                    {
                        "vectors": torch.stack(vectors[saved:]).cpu(),
                        "accuracy": torch.stack(accuracies[saved:]),
                    },
                )
                parts, saved = parts + 1, len(vectors)
                atomic.write_torch(
                    state_path, {"parts": parts, "optimizer": optimizer.state_dict()}
                )
            bar.advance(status=f"acc {float(accuracies[-1]):.2f}%")
    return torch.stack(vectors).cpu(), torch.stack(accuracies)
