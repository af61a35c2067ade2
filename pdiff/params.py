"""Parameter subsets: select by name or pattern, flatten/unflatten in a recorded order, split, normalise."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from torch import nn

from pdiff.config import ConfigError, Normalization

ALL_PARAMETERS = ("*", "all")


@dataclass(frozen=True)
class ParamEntry:
    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())


@dataclass(frozen=True)
class ParamSpec:
    """The selected parameters in model order: names, shapes and offsets into the flat vector."""

    entries: tuple[ParamEntry, ...]

    @property
    def dim(self) -> int:
        return sum(entry.numel for entry in self.entries)

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """dict name -> tensor (model shapes) to a [D] vector."""
        return torch.cat([tensors[entry.name].detach().reshape(-1) for entry in self.entries])

    def unflatten(self, vectors: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, D] vectors to dict name -> [B, *shape] (views, no copy)."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape [B, {self.dim}], got {tuple(vectors.shape)}")
        return {entry.name: vectors[:, entry.offset:entry.offset + entry.numel].reshape(-1, *entry.shape)
                for entry in self.entries}

    def to_json(self) -> list[dict]:
        return [{"name": e.name, "shape": list(e.shape), "offset": e.offset, "numel": e.numel} for e in self.entries]

    @classmethod
    def from_json(cls, items: list[dict]) -> ParamSpec:
        spec = cls(tuple(ParamEntry(item["name"], tuple(item["shape"]), item["offset"]) for item in items))
        offset = 0
        for entry in spec.entries:
            if entry.offset != offset:
                raise ValueError(f"parameter spec is inconsistent at {entry.name}: offset {entry.offset}, "
                                 f"expected {offset}")
            offset += entry.numel
        return spec


def _matches(name: str, pattern: str) -> bool:
    return pattern in ALL_PARAMETERS or fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".")


def select_parameters(model: nn.Module, patterns: list[str], key: str = "task.param.layers") -> ParamSpec:
    """Parameters whose name equals, is under (module prefix), or glob-matches one of `patterns`."""
    named = list(model.named_parameters())
    for pattern in patterns:
        if not any(_matches(name, pattern) for name, _ in named):
            examples = sorted({name.rsplit(".", 1)[0] for name, _ in named})
            raise ConfigError(f"{key} pattern {pattern!r} matches no parameter; allowed: module names or globs "
                              f"over {examples[:12]}{' ...' if len(examples) > 12 else ''}, or '*' for all")
    entries, offset = [], 0
    for name, param in named:
        if any(_matches(name, pattern) for pattern in patterns):
            entries.append(ParamEntry(name, tuple(param.shape), offset))
            offset += param.numel()
    return ParamSpec(tuple(entries))


def is_whole_model(model: nn.Module, spec: ParamSpec) -> bool:
    """Whether `spec` selects every parameter of `model` (nothing but buffers stays frozen)."""
    return spec.dim == sum(param.numel() for param in model.parameters())


def running_statistics(model: nn.Module) -> list[str]:
    """Names of the buffers that hold normalisation running statistics (a parameter vector does not carry them)."""
    return [name for name, buffer in model.named_buffers() if buffer.is_floating_point()]


def read_vector(model: nn.Module, spec: ParamSpec) -> torch.Tensor:
    return spec.flatten(dict(model.named_parameters()))


def split_network(model: nn.Module, first_name: str) -> tuple[nn.Sequential, nn.Module]:
    """(head, tail) with tail(head(x)) == model(x), tail holding `first_name` and everything after it.

    Only an nn.Sequential can be split: any other network is all tail (its forward may be anything).
    """
    if not isinstance(model, nn.Sequential):
        return nn.Sequential(), model
    path = first_name.split(".")
    children = list(model.named_children())
    for index, (child_name, child) in enumerate(children):
        if child_name != path[0]:
            continue
        before, after = children[:index], children[index + 1:]
        if isinstance(child, nn.Sequential) and len(path) > 2:
            inner_head, inner_tail = split_network(child, ".".join(path[1:]))
            return (nn.Sequential(*[m for _, m in before], inner_head),
                    nn.Sequential(inner_tail, *[m for _, m in after]))
        return nn.Sequential(*[m for _, m in before]), nn.Sequential(*[m for _, m in children[index:]])
    raise ValueError(f"{first_name!r} is not a parameter path of this network")


def tail_parameter_names(model: nn.Module, tail: nn.Module) -> dict[str, str]:
    """Map the model's parameter names to the tail's own names for the same tensors."""
    by_id = {id(param): name for name, param in model.named_parameters()}
    return {by_id[id(param)]: name for name, param in tail.named_parameters()}


class ParamNormalizer(nn.Module):
    """Z-scores zoo vectors: per-tensor scalar statistics, or per-coordinate mean with per-tensor spread."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @classmethod
    def fit(cls, spec: ParamSpec, zoo: torch.Tensor, mode: Normalization) -> ParamNormalizer:
        """Statistics of a [K, D] zoo, read one tensor's columns at a time (the zoo may be memory-mapped)."""
        normalizer = cls(spec.dim)
        for entry in spec.entries:
            part = slice(entry.offset, entry.offset + entry.numel)
            block = zoo[:, part].double()
            if mode is Normalization.per_tensor:
                normalizer.mean[part] = block.mean().float()
                spread = block.std() if block.numel() > 1 else block.new_tensor(0.0)
            else:
                centre = block.mean(0)
                normalizer.mean[part] = centre.float()
                spread = (block - centre).pow(2).mean().sqrt()
            normalizer.std[part] = spread.clamp_min(1e-8).float()
        return normalizer

    def normalize(self, vectors: torch.Tensor) -> torch.Tensor:
        return (vectors - self.mean) / self.std

    def denormalize(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors * self.std + self.mean
