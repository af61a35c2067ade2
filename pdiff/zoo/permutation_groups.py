"""Which tensors a hidden-unit permutation of a task network touches (Git Re-Basin's permutation
spec, Ainsworth et al., ICLR 2023).

Hidden units of a feed-forward network can be reordered without changing the function it computes,
as long as every tensor that reads or writes those units is reordered the same way.
`permutation_groups` lists, for a flat nn.Sequential of Linear/ConvNd, BatchNorm and
elementwise/pooling layers, which state_dict axes each hidden-unit permutation touches. Any other
module raises ValueError, so an unsupported architecture is never aligned wrongly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ELEMENTWISE = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Dropout,
    nn.AlphaDropout,
)
_CHANNEL_OPS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)


@dataclass(frozen=True)
class PermutedAxis:
    """One state_dict tensor axis reordered by a group; `block` consecutive entries move together
    (after Flatten)."""

    key: str
    axis: int
    block: int = 1


@dataclass(frozen=True)
class PermutationGroup:
    """The hidden units (output rows/channels) of layer `name` and every tensor axis that indexes
    them."""

    name: str
    size: int
    axes: tuple[PermutedAxis, ...]


def _leaves(seq: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
        where = f" at {prefix.rstrip('.')!r}" if prefix else ""
        raise ValueError(
            f"rebasin supports only plain nn.Sequential trees; got {type(seq).__name__}{where}"
        )
    for name, module in seq.named_children():
        if isinstance(module, nn.Sequential):
            yield from _leaves(module, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", module


def _unsupported(name: str, module: nn.Module, why: str = "") -> ValueError:
    return ValueError(
        f"rebasin cannot permute through module {name!r} of type {type(module).__name__}"
        + (
            f": {why}"
            if why
            else "; supported: Linear, Conv1d/2d/3d, BatchNorm1d/2d/3d, elementwise "
            "activations, Dropout, pooling, Flatten, Unflatten in a plain nn.Sequential"
        )
    )


def permutation_groups(model: nn.Sequential) -> list[PermutationGroup]:
    """The hidden-unit permutation groups of `model`: one per Linear/ConvNd except the last such
    layer.

    Raises ValueError naming the module for any module or layout it cannot permute through (e.g. a
    residual block).
    """
    leaves = list(_leaves(model, ""))
    keys = set(model.state_dict())
    groups: list[PermutationGroup] = []
    open_name: str | None = None  # the weight layer whose output units are currently flowing
    size = 0
    axes: list[PermutedAxis] = []
    spatial = False  # the tensor has spatial dims after the channel dim (conv output, Unflatten)
    block: int | None = (
        1  # entries per unit on the next layer's input axis; None right after a Flatten
    )

    def add(key: str, axis: int, width: int) -> None:
        if key not in keys:
            raise ValueError(
                f"rebasin expected state_dict key {key!r}, which the model does not have "
                "(reparametrised weights are not supported)"
            )
        axes.append(PermutedAxis(key, axis, width))

    def features_block(name: str, module: nn.Module, features: int) -> int:
        nonlocal block
        if (
            block is None
        ):  # first layer after Flatten: the spatial size follows from its feature count
            if features % size:
                raise _unsupported(
                    name, module, f"{features} input features are not a multiple of {size} channels"
                )
            block = features // size
        if features != size * block:
            raise _unsupported(
                name, module, f"expects {features} inputs, the previous layer gives {size * block}"
            )
        return block

    for name, module in leaves:
        if isinstance(module, _WEIGHT_LAYERS):
            is_linear = isinstance(module, nn.Linear)
            if is_linear and spatial:
                raise _unsupported(
                    name, module, "Linear applied to a spatial tensor without a Flatten before it"
                )
            if not is_linear and (module.groups != 1 or (open_name is not None and not spatial)):
                raise _unsupported(
                    name, module, "grouped convolution or convolution on flat features"
                )
            if open_name is not None:
                inputs = module.in_features if is_linear else module.in_channels
                add(f"{name}.weight", 1, features_block(name, module, inputs))
                groups.append(PermutationGroup(open_name, size, tuple(axes)))
            open_name, size, axes, block = name, module.weight.shape[0], [], 1
            spatial = not is_linear
            add(f"{name}.weight", 0, 1)
            if module.bias is not None:
                add(f"{name}.bias", 0, 1)
        elif isinstance(module, _NORMS):
            if open_name is None:
                continue  # normalises the unpermuted inputs
            width = features_block(name, module, module.num_features)
            for attr in ("weight", "bias", "running_mean", "running_var"):
                if getattr(module, attr, None) is not None:
                    add(f"{name}.{attr}", 0, width)
        elif isinstance(module, _ELEMENTWISE):
            continue
        elif isinstance(module, _CHANNEL_OPS):
            if open_name is not None and not spatial:
                raise _unsupported(
                    name, module, "pooling/channel dropout over non-channel features"
                )
        elif isinstance(module, nn.Flatten):
            start = module.start_dim
            if open_name is not None and spatial and start == 1 and module.end_dim == -1:
                block, spatial = None, False
            elif open_name is not None and spatial and start >= 2:
                continue
            elif open_name is None:
                spatial = spatial and not (start == 1 and module.end_dim == -1)
            elif open_name is not None and not spatial and start == 1 and module.end_dim == -1:
                continue  # a no-op on [N, features]
            else:
                raise _unsupported(
                    name, module, f"Flatten(start_dim={start}, end_dim={module.end_dim}) here"
                )
        elif isinstance(module, nn.Unflatten):
            if open_name is not None and not (spatial and module.dim >= 2):
                raise _unsupported(name, module, "Unflatten would split the permuted feature axis")
            spatial = True
        else:
            raise _unsupported(name, module)
    return groups
