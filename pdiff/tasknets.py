"""The networks whose parameters pdiff generates; each is an nn.Sequential tree so it can be split."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from pdiff.config import NetName


def build_task_net(net_cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """Build the network named by `task.net.name` for this input shape and class count."""
    name = NetName(net_cfg.name) if not isinstance(net_cfg.name, NetName) else net_cfg.name
    if name is NetName.cnn:
        return digits_cnn(input_shape[0], num_classes, net_cfg.width)
    if name is NetName.mlp:
        return mlp_bn(input_shape, num_classes, list(net_cfg.hidden))
    return resnet18_cifar(input_shape[0], num_classes)


def _conv_bn_relu(index: int, c_in: int, c_out: int) -> list[tuple[str, nn.Module]]:
    return [(f"conv{index}", nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)),
            (f"bn{index}", nn.BatchNorm2d(c_out)), (f"relu{index}", nn.ReLU())]


def digits_cnn(in_channels: int, num_classes: int, width: int = 32) -> nn.Sequential:
    """Four conv-BN-ReLU layers (width, 2w, 4w, 4w), one 2x max-pool, global average pool, linear head."""
    widths = [width, 2 * width, 4 * width, 4 * width]
    layers = _conv_bn_relu(1, in_channels, widths[0]) + _conv_bn_relu(2, widths[0], widths[1])
    layers.append(("pool", nn.MaxPool2d(2)))
    layers += _conv_bn_relu(3, widths[1], widths[2]) + _conv_bn_relu(4, widths[2], widths[3])
    layers += [("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(widths[3], num_classes))]
    return nn.Sequential(OrderedDict(layers))


def mlp_bn(input_shape: tuple[int, ...], num_classes: int, hidden: list[int]) -> nn.Sequential:
    """Flatten, then Linear-BN-ReLU per hidden width, then a linear head; fits any input shape."""
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = int(torch.tensor(input_shape).prod())
    for index, out in enumerate(hidden, start=1):
        layers += [(f"fc{index}", nn.Linear(width, out, bias=False)), (f"bn{index}", nn.BatchNorm1d(out)),
                   (f"relu{index}", nn.ReLU())]
        width = out
    layers.append(("head", nn.Linear(width, num_classes)))
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
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18_cifar(in_channels: int, num_classes: int) -> nn.Sequential:
    """CIFAR ResNet-18 (3x3 stem, no max-pool) with torchvision-style names such as layer4.1.bn2."""
    layers: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)), ("bn1", nn.BatchNorm2d(64)),
        ("relu", nn.ReLU())]
    c_in = 64
    for index, (c_out, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        layers.append((f"layer{index}", nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1))))
        c_in = c_out
    layers += [("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(512, num_classes))]
    return nn.Sequential(OrderedDict(layers))
