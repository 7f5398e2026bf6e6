"""The residual block (He et al., 2016): convolutions whose output is added to the block's input.

    - residual: {channels: 64, stride: 2}                    # 3x3 conv, bn, relu, 3x3 conv, bn
    - residual: {channels: 256, bottleneck: true, se: true}  # 1x1 to width, 3x3, 1x1 back (1-3-1)

The input is added back as it is, or through a 1 x 1 projection with batch norm when the
channels or the stride change (torchvision's ResNet), and a ReLU follows the sum. A bottleneck's
inner width is channels / 4 unless `width` says otherwise; its stride sits on the 3 x 3
convolution. `se: true` puts a squeeze-and-excitation gate on the last batch norm, before the
sum. Layers are named `res1.conv1`, `res1.bn1`, ..., `res1.shortcut.conv`, so each can be
addressed for Grad-CAM, and weights are stored under those names.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from cnncli.errors import CnncliError
from cnncli.nn.blocks.kinds import BlockKind
from cnncli.nn.blocks.options import flag, positive_int, size_pair
from cnncli.nn.blocks.spatial import check_maps
from cnncli.nn.blocks.squeeze import SE_OPTIONS, squeeze_excite


class Sum(nn.Module):
    """The main path's output plus the shortcut's: one more input wired to every value."""

    def forward(self, main: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return main + shortcut

    def connections(self, output_shape: tuple[int, ...]) -> int:
        return math.prod(output_shape)


class Residual(nn.Module):
    """Layers run in order (`main`), plus the block's input (through `shortcut` when there is
    one), then `act` when there is one (MobileNet's inverted residual has none).

    `beside` names the children on a path beside the main one that reads the block's input:
    cnncli.nn.layers counts its receptive field apart and joins it at the sum."""

    beside = ("shortcut",)
    gate_only = False

    def __init__(self, main: OrderedDict, shortcut: nn.Module | None = None, act: nn.Module | None = None):
        super().__init__()
        self.main = tuple(main)
        for name, layer in main.items():
            self.add_module(name, layer)
        if shortcut is not None:
            self.shortcut = shortcut
        self.add = Sum()
        if act is not None:
            self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for name in self.main:
            out = getattr(self, name)(out)
        out = self.add(out, self.shortcut(x) if "shortcut" in self._modules else x)
        return self.act(out) if "act" in self._modules else out


def add_conv_norm(layers: OrderedDict, names: tuple[str, str, str], in_channels: int, out_channels: int,
                  kernel: int | tuple[int, int], stride: int | tuple[int, int] = 1, groups: int = 1,
                  act: nn.Module | None = None) -> None:
    """A convolution without bias (odd kernel, padded to keep the size at stride 1), its batch
    norm and, when given, its activation, under the three `names`."""
    kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    padding = (kernel[0] // 2, kernel[1] // 2)
    conv_name, norm_name, act_name = names
    layers[conv_name] = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, groups=groups,
                                  bias=False)
    layers[norm_name] = nn.BatchNorm2d(out_channels)
    if act is not None:
        layers[act_name] = act


def strided_size(shape: tuple[int, ...], stride: tuple[int, int]) -> list[int]:
    """Height and width after an odd kernel padded by half of it (or a 1 x 1 one) at `stride`."""
    return [(size - 1) // step + 1 for size, step in zip(shape[1:], stride)]


def channels_and_stride(kind: str, options: dict, shape: tuple[int, ...], where: str) -> tuple[str, int, tuple]:
    """(the block's key, its output channels, its stride), checked, for a block on maps."""
    check_maps(kind, shape, where)
    key = f"{where}.{kind}"
    return (key, positive_int(options.get("channels"), f"{key}.channels"),
            size_pair(options.get("stride", 1), f"{key}.stride"))


def build_residual(options: dict, shape: tuple[int, ...], where: str) -> tuple[nn.Module, tuple[int, ...]]:
    key, channels, stride = channels_and_stride("residual", options, shape, where)
    in_channels = shape[0]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if flag(options.get("bottleneck", False), f"{key}.bottleneck"):
        width = positive_int(options.get("width", max(1, channels // 4)), f"{key}.width")
        add_conv_norm(layers, ("conv1", "bn1", "act1"), in_channels, width, 1, act=nn.ReLU())
        add_conv_norm(layers, ("conv2", "bn2", "act2"), width, width, 3, stride, act=nn.ReLU())
        add_conv_norm(layers, ("conv3", "bn3", ""), width, channels, 1)
    elif "width" in options:
        raise CnncliError(f"{key}.width: only means something with bottleneck: true")
    else:
        add_conv_norm(layers, ("conv1", "bn1", "act1"), in_channels, channels, 3, stride, act=nn.ReLU())
        add_conv_norm(layers, ("conv2", "bn2", ""), channels, channels, 3)
    gate = squeeze_excite(options, channels, key)
    if gate is not None:
        layers["se"] = gate
    shortcut = None
    if in_channels != channels or stride != (1, 1):
        shortcut = nn.Sequential(OrderedDict(conv=nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                             bn=nn.BatchNorm2d(channels)))
    return Residual(layers, shortcut, nn.ReLU()), (channels, *strided_size(shape, stride))


RESIDUAL = BlockKind(build_residual, ("channels", "stride", "bottleneck", "width", *SE_OPTIONS), prefix="res")
