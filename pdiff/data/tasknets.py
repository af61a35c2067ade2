"""The networks whose parameters pdiff generates: built-in ones and any `task.net._target_` of the
user's.

The built-in networks are nn.Sequential trees, so evaluation can run the frozen head once and only
the tail per model; any other nn.Module is run whole.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict

import torch
from hydra.utils import get_object
from omegaconf import OmegaConf
from torch import nn

from pdiff.errors import ConfigError, one_line


def build_task_net(net_cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Instantiate `task.net` ({_target_: ..., **kwargs}) with input_shape and num_classes added.

    A _target_ that cannot be imported, that does not take these arguments, that fails on their
    values, or that returns no nn.Module raises ConfigError naming task.net._target_; the built-in
    networks name the key (task.net.width=0) of a size that is not a positive integer, or the input
    shape they cannot take.
    """
    kwargs = (
        OmegaConf.to_container(net_cfg, resolve=True)
        if OmegaConf.is_config(net_cfg)
        else dict(net_cfg or {})
    )
    target = kwargs.pop("_target_", None)
    if not isinstance(target, str) or not target:
        raise ConfigError(
            f"task.net={net_cfg!r} is invalid: needs _target_: package.module.Class (or a function) "
            "returning an nn.Module"
        )
    try:
        factory = get_object(target)
    except Exception as error:  # any import failure of the user's module is reported the same way
        raise ConfigError(
            f"task.net._target_={target!r} cannot be imported ({type(error).__name__}: {error}); "
            "give package.module.Name on PYTHONPATH"
        ) from error
    kwargs.update(input_shape=tuple(input_shape), num_classes=int(num_classes))
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as error:
        raise ConfigError(
            f"task.net._target_={target!r} does not accept the arguments {sorted(kwargs)} ({error}); "
            "it is called with input_shape, num_classes and the other keys of task.net"
        ) from error
    except ValueError:  # no signature to check (a builtin); calling it will tell
        pass
    try:
        model = factory(**kwargs)
    except ConfigError:
        raise
    except Exception as error:  # a user's network refusing its arguments: name them, in one line
        settings = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        raise ConfigError(
            f"task.net._target_={target!r} failed to build with {settings} ("
            f"{one_line(error)}); check the values of task.net"
        ) from error
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"task.net._target_={target!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _positive(key: str, value, meaning: str) -> int:
    """`value` of task.net.`key`, or ConfigError naming it when it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"task.net.{key}={value!r} is invalid: must be an integer >= 1 ({meaning})"
        )
    return value


def _positive_list(key: str, values, meaning: str) -> list[int]:
    """`values` of task.net.`key`, or ConfigError naming the list and its first entry that is not an
    integer >= 1."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise ConfigError(
            f"task.net.{key}={values!r} is invalid: must be a list of integers >= 1 ({meaning})"
        )
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"task.net.{key}={list(values)!r} is invalid: every entry must be an integer >= 1 "
                f"({meaning}), not {value!r}"
            )
    return list(values)


def _require_input(network: str, input_shape: tuple[int, ...], fits: bool, expected: str) -> None:
    if not fits:
        raise ConfigError(
            f"task.net._target_='pdiff.data.tasknets.{network}' needs samples shaped {expected}, but the "
            f"data's are {tuple(input_shape)}: choose a network for this input "
            "(pdiff.data.tasknets.mlp_bn takes any shape)"
        )


def _conv_bn_relu(index: int, c_in: int, c_out: int) -> list[tuple[str, nn.Module]]:
    return [
        (f"conv{index}", nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)),
        (f"bn{index}", nn.BatchNorm2d(c_out)),
        (f"relu{index}", nn.ReLU()),
    ]


def digits_cnn(input_shape: tuple[int, ...], num_classes: int, width: int = 32) -> nn.Sequential:
    """Four conv-BN-ReLU layers (width, 2w, 4w, 4w), one 2x max-pool, global average pool, linear
    head."""
    _require_input(
        "digits_cnn",
        input_shape,
        len(input_shape) == 3 and min(input_shape[1:]) >= 2,
        "[C, H, W] with H, W >= 2",
    )
    width = _positive("width", width, "channels of the first conv layer")
    in_channels = input_shape[0]
    widths = [width, 2 * width, 4 * width, 4 * width]
    layers = _conv_bn_relu(1, in_channels, widths[0]) + _conv_bn_relu(2, widths[0], widths[1])
    layers.append(("pool", nn.MaxPool2d(2)))
    layers += _conv_bn_relu(3, widths[1], widths[2]) + _conv_bn_relu(4, widths[2], widths[3])
    layers += [
        ("gap", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(widths[3], num_classes)),
    ]
    return nn.Sequential(OrderedDict(layers))


def mlp_bn(
    input_shape: tuple[int, ...], num_classes: int, hidden: list[int], batch_norm: bool = True
) -> nn.Sequential:
    """Flatten, then Linear-BN-ReLU per hidden width (Linear-ReLU without batch_norm), then a linear
    head."""
    hidden = _positive_list("hidden", hidden, "the width of each hidden layer")
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = int(torch.tensor(input_shape).prod())
    for index, out in enumerate(hidden, start=1):
        layers.append((f"fc{index}", nn.Linear(width, out, bias=not batch_norm)))
        if batch_norm:
            layers.append((f"bn{index}", nn.BatchNorm1d(out)))
        layers.append((f"relu{index}", nn.ReLU()))
        width = out
    layers.append(("head", nn.Linear(width, num_classes)))
    return nn.Sequential(OrderedDict(layers))


def conv1d_bn(
    input_shape: tuple[int, ...], num_classes: int, channels: list[int], kernel_size: int = 5
) -> nn.Sequential:
    """For 1-D signals [C, L] (or [L]): Conv1d-BN-ReLU per width, each halving the length, then a
    linear head."""
    _require_input("conv1d_bn", input_shape, len(input_shape) in (1, 2), "[L] or [C, L]")
    channels = _positive_list("channels", channels, "the output channels of each conv layer")
    kernel_size = _positive("kernel_size", kernel_size, "the length of each conv kernel")
    length = input_shape[-1]
    in_channels = input_shape[0] if len(input_shape) == 2 else 1
    layers: list[tuple[str, nn.Module]] = (
        [] if len(input_shape) == 2 else [("unflatten", nn.Unflatten(1, (1, length)))]
    )
    for index, out in enumerate(channels, start=1):
        layers += [
            (
                f"conv{index}",
                nn.Conv1d(
                    in_channels, out, kernel_size, stride=2, padding=kernel_size // 2, bias=False
                ),
            ),
            (f"bn{index}", nn.BatchNorm1d(out)),
            (f"relu{index}", nn.ReLU()),
        ]
        in_channels, length = out, (length + 2 * (kernel_size // 2) - kernel_size) // 2 + 1
    layers += [("flatten", nn.Flatten()), ("head", nn.Linear(in_channels * length, num_classes))]
    return nn.Sequential(OrderedDict(layers))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN with an identity or 1x1 projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18_cifar(input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """CIFAR ResNet-18 (3x3 stem, no max-pool) with torchvision-style names such as layer4.1.bn2."""
    _require_input("resnet18_cifar", input_shape, len(input_shape) == 3, "[C, H, W]")
    in_channels = input_shape[0]
    layers: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)),
        ("bn1", nn.BatchNorm2d(64)),
        ("relu", nn.ReLU()),
    ]
    c_in = 64
    for index, (c_out, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        layers.append(
            (
                f"layer{index}",
                nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)),
            )
        )
        c_in = c_out
    layers += [
        ("avgpool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(512, num_classes)),
    ]
    return nn.Sequential(OrderedDict(layers))


@torch.no_grad()
def run_in_batches(module: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """module(x), computed `batch_size` rows at a time without gradients."""
    return torch.cat([module(chunk) for chunk in x.split(batch_size)])


@torch.no_grad()
def accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent."""
    predictions = torch.cat([module(chunk).argmax(-1) for chunk in x.split(batch_size)])
    return float((predictions == y).double().mean() * 100)
