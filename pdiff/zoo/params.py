"""Parameter subsets: select by name or pattern, flatten/unflatten in a recorded order, split,
normalise."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from torch import nn

from pdiff.config import Normalization
from pdiff.errors import ConfigError

ALL_PARAMETERS = ("*", "all")
STATISTIC_NAMES = ("running_mean", "running_var")


@dataclass(frozen=True)
class ParamEntry:
    name: str
    shape: tuple[int, ...]
    offset: int
    statistic: bool = (
        False  # a BatchNorm running statistic (a buffer) carried in the vector, not trained
    )

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

    @property
    def parameter_names(self) -> list[str]:
        """The trained entries (without the carried running statistics)."""
        return [entry.name for entry in self.entries if not entry.statistic]

    @property
    def variance_names(self) -> frozenset[str]:
        return frozenset(
            e.name for e in self.entries if e.statistic and e.name.endswith("running_var")
        )

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """dict name -> tensor (model shapes) to a [D] vector."""
        return torch.cat([tensors[entry.name].detach().reshape(-1) for entry in self.entries])

    def unflatten(self, vectors: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, D] vectors to dict name -> [B, *shape] (views, no copy)."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(
                f"expected vectors of shape [B, {self.dim}], got {tuple(vectors.shape)}"
            )
        return {
            entry.name: vectors[:, entry.offset : entry.offset + entry.numel].reshape(
                -1, *entry.shape
            )
            for entry in self.entries
        }

    def to_json(self) -> list[dict]:
        return [
            {"name": e.name, "shape": list(e.shape), "offset": e.offset, "numel": e.numel}
            | ({"statistic": True} if e.statistic else {})
            for e in self.entries
        ]

    @classmethod
    def from_json(cls, items: list[dict]) -> ParamSpec:
        spec = cls(
            tuple(
                ParamEntry(
                    item["name"], tuple(item["shape"]), item["offset"], bool(item.get("statistic"))
                )
                for item in items
            )
        )
        offset = 0
        for entry in spec.entries:
            if entry.offset != offset:
                raise ValueError(
                    f"parameter spec is inconsistent at {entry.name}: offset {entry.offset}, "
                    f"expected {offset}"
                )
            offset += entry.numel
        return spec


def _matches(name: str, pattern: str) -> bool:
    return (
        pattern in ALL_PARAMETERS
        or fnmatch.fnmatchcase(name, pattern)
        or name.startswith(pattern + ".")
    )


def select_parameters(
    model: nn.Module, patterns: list[str], key: str = "task.param.layers", statistics: bool = False
) -> ParamSpec:
    """Parameters whose name equals, is under (module prefix), or glob-matches one of `patterns`, in
    state_dict order; with `statistics`, also the running mean and variance of every norm layer
    whose weight is selected."""
    named = list(model.named_parameters())
    for pattern in patterns:
        if not any(_matches(name, pattern) for name, _ in named):
            examples = sorted({name.rsplit(".", 1)[0] for name, _ in named})
            raise ConfigError(
                f"{key} pattern {pattern!r} matches no parameter; allowed: module names or globs "
                f"over {examples[:12]}{' ...' if len(examples) > 12 else ''}, or '*' for all"
            )
    selected = {name for name, _ in named if any(_matches(name, pattern) for pattern in patterns)}
    carried = {
        name
        for name in running_statistics(model)
        if statistics and f"{name.rsplit('.', 1)[0]}.weight" in selected
    }
    entries, offset = [], 0
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name in selected or name in carried:
            entries.append(ParamEntry(name, tuple(tensor.shape), offset, statistic=name in carried))
            offset += tensor.numel()
    return ParamSpec(tuple(entries))


def is_whole_model(model: nn.Module, spec: ParamSpec) -> bool:
    """Whether `spec` selects every parameter of `model` (nothing but buffers stays frozen)."""
    return len(spec.parameter_names) == sum(1 for _ in model.parameters())


def is_entire_state(model: nn.Module, spec: ParamSpec) -> bool:
    """Whether a vector of `spec` holds all of `model`'s state: every parameter and every running
    statistic (a model with it written in behaves the same whatever else the network held)."""
    return is_whole_model(model, spec) and set(running_statistics(model)) <= set(spec.names)


def running_statistics(model: nn.Module) -> list[str]:
    """Names of the norm layers' running means and variances (task.param.statistics carries them)."""
    return [name for name, _ in model.named_buffers() if name.rsplit(".", 1)[-1] in STATISTIC_NAMES]


def read_vector(model: nn.Module, spec: ParamSpec) -> torch.Tensor:
    return spec.flatten(model.state_dict(keep_vars=True))


def write_vector(model: nn.Module, spec: ParamSpec, vector: torch.Tensor) -> None:
    """Copy a [D] vector into `model`'s selected parameters (and carried statistics), in place."""
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, value in spec.unflatten(vector[None]).items():
            state[name].copy_(value[0])


def clamp_statistics(spec: ParamSpec, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` with every carried running variance clamped at 0 (a generated or noised variance
    may be negative; BatchNorm adds its eps)."""
    variances = spec.variance_names
    return {
        name: value.clamp_min(0) if name in variances else value for name, value in tensors.items()
    }


def split_network(model: nn.Module, first_name: str) -> tuple[nn.Sequential, nn.Module]:
    """(head, tail) with tail(head(x)) == model(x), tail holding `first_name` and everything after
    it.

    Only an nn.Sequential can be split: any other network is all tail (its forward may be anything).
    """
    if not isinstance(model, nn.Sequential):
        return nn.Sequential(), model
    path = first_name.split(".")
    children = list(model.named_children())
    for index, (child_name, child) in enumerate(children):
        if child_name != path[0]:
            continue
        before, after = children[:index], children[index + 1 :]
        if isinstance(child, nn.Sequential) and len(path) > 2:
            inner_head, inner_tail = split_network(child, ".".join(path[1:]))
            return (
                nn.Sequential(*[m for _, m in before], inner_head),
                nn.Sequential(inner_tail, *[m for _, m in after]),
            )
        return nn.Sequential(*[m for _, m in before]), nn.Sequential(
            *[m for _, m in children[index:]]
        )
    raise ValueError(f"{first_name!r} is not a parameter path of this network")


def tail_tensor_names(model: nn.Module, tail: nn.Module) -> dict[str, str]:
    """Map the model's parameter and buffer names to the tail's own names for the same tensors."""
    by_id = {id(tensor): name for name, tensor in model.state_dict(keep_vars=True).items()}
    return {by_id[id(tensor)]: name for name, tensor in tail.state_dict(keep_vars=True).items()}


FIT_BLOCK = 1 << 16  # columns of a tensor a normaliser's statistics read at a time


class ParamNormalizer(nn.Module):
    """Z-scores zoo vectors: per-tensor scalar statistics, or per-coordinate mean with per-tensor
    spread."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @classmethod
    def fit(cls, spec: ParamSpec, zoo: torch.Tensor, mode: Normalization) -> ParamNormalizer:
        """Statistics of a [K, D] zoo, read FIT_BLOCK columns of one tensor at a time (the zoo may
        be memory-mapped; no float64 copy of a whole tensor's columns is made)."""
        normalizer = cls(spec.dim)
        for entry in spec.entries:
            part = slice(entry.offset, entry.offset + entry.numel)
            blocks = [
                slice(start, min(start + FIT_BLOCK, part.stop))
                for start in range(part.start, part.stop, FIT_BLOCK)
            ]
            count = len(zoo) * entry.numel
            if mode is Normalization.per_tensor:  # one mean, one (unbiased) spread per tensor
                mean = sum(zoo[:, block].double().sum() for block in blocks) / count
                normalizer.mean[part] = float(mean)
                squares = sum((zoo[:, block].double() - mean).pow(2).sum() for block in blocks)
                spread = (squares / (count - 1)).sqrt() if count > 1 else torch.tensor(0.0)
            else:  # a mean per coordinate, the tensor's spread around them
                squares = 0.0
                for block in blocks:
                    values = zoo[:, block].double()
                    centre = values.mean(0)
                    normalizer.mean[block] = centre.float()
                    squares = squares + (values - centre).pow(2).sum()
                spread = torch.as_tensor(squares / count).sqrt()
            normalizer.std[part] = spread.clamp_min(1e-8).float()
        return normalizer

    def normalize(self, vectors: torch.Tensor) -> torch.Tensor:
        return (vectors - self.mean) / self.std

    def denormalize(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors * self.std + self.mean
