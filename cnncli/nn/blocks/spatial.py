"""The block kinds that work on (channels, height, width) maps: conv and pool.

Padding `same` follows TensorFlow's rule (output = ceil(input / stride), the extra pixel at the
bottom/right), so the lecture's networks are reproduced exactly; `kernel: [h, full]` spans the
whole input width (text: the embedding dimension).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from cnncli.errors import CnncliError
from cnncli.nn.blocks.kinds import BlockKind
from cnncli.nn.blocks.options import add_tail, flag, positive_int, size_pair
from cnncli.nn.blocks.squeeze import SE_OPTIONS, squeeze_excite


class FullWidthConv2d(nn.Conv2d):
    """A Conv2d whose kernel spans its whole input width (`kernel: [h, full]`, as over a sentence's
    embedding matrix), computed as a 1-d convolution along the rows: the same weights and outputs,
    but CPU kernels run it about 1.6x faster than a 2-d one with a single output column."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        if width != self.kernel_size[1]:
            return super().forward(x)
        rows = x.permute(0, 1, 3, 2).reshape(batch, channels * width, height)
        weight = self.weight.permute(0, 1, 3, 2).reshape(self.out_channels, channels * width, self.kernel_size[0])
        return F.conv1d(rows, weight, self.bias, self.stride[0], self.padding[0], self.dilation[0]).unsqueeze(-1)


def build_conv(options: dict, shape: tuple[int, ...], where: str) -> tuple[nn.Module, tuple[int, ...]]:
    check_maps("conv", shape, where, "; put conv blocks before flatten/linear")
    in_channels, height, width = shape
    channels = positive_int(options.get("channels"), f"{where}.conv.channels")
    kernel = size_pair(options.get("kernel", 3), f"{where}.conv.kernel", full=(height, width))
    stride = size_pair(options.get("stride", 1), f"{where}.conv.stride")
    padding = options.get("padding", "valid")
    batch_norm = flag(options.get("batch_norm", False), f"{where}.conv.batch_norm")
    bias = flag(options.get("bias", not batch_norm), f"{where}.conv.bias")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if padding == "same":
        pads = [_same_padding(size, k, s) for size, k, s in zip((height, width), kernel, stride)]
        (top, bottom), (left, right) = pads
        if top == bottom and left == right:
            conv_padding = (top, left)
        else:
            layers["pad"] = nn.ZeroPad2d((left, right, top, bottom))
            conv_padding = (0, 0)
        out = [math.ceil(size / s) for size, s in zip((height, width), stride)]
    else:
        conv_padding = (0, 0) if padding == "valid" else size_pair(padding, f"{where}.conv.padding", minimum=0)
        out = [(size + 2 * p - k) // s + 1 for size, p, k, s in zip((height, width), conv_padding, kernel, stride)]
    conv = FullWidthConv2d if kernel[1] == width and conv_padding[1] == 0 else nn.Conv2d
    layers["conv"] = conv(in_channels, channels, kernel, stride=stride, padding=conv_padding, bias=bias)
    if options.get("pool") is not None:  # max pool before batch norm and activation: they run on a quarter
        pool = positive_int(options["pool"], f"{where}.conv.pool")
        layers["pool"] = nn.MaxPool2d(pool)
        out = [size // pool for size in out]
        if min(out) < 1:
            raise CnncliError(f"{where}.conv.pool: {pool} is larger than the {height} x {width} maps it pools")
    add_tail(layers, options, f"{where}.conv", nn.BatchNorm2d(channels) if batch_norm else None,
             squeeze_excite(options, channels, f"{where}.conv"))
    return nn.Sequential(layers), (channels, *out)


def build_pool(options: dict, shape: tuple[int, ...], where: str) -> tuple[nn.Module, tuple[int, ...]]:
    check_maps("pool", shape, where)
    kind = options.get("type", "max")
    size = options.get("size", 2)
    if kind not in ("max", "avg"):
        raise CnncliError(f"{where}.pool.type: expected max or avg, got {kind!r}")
    if size == "global":
        module = nn.AdaptiveMaxPool2d(1) if kind == "max" else nn.AdaptiveAvgPool2d(1)
        return nn.Sequential(OrderedDict(pool=module)), (shape[0], 1, 1)
    size = size_pair(size, f"{where}.pool.size", full=shape[1:])
    stride = size_pair(options.get("stride", size), f"{where}.pool.stride")
    module = (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(size, stride=stride)
    out = [(n - k) // s + 1 for n, k, s in zip(shape[1:], size, stride)]
    return nn.Sequential(OrderedDict(pool=module)), (shape[0], *out)


CONV = BlockKind(build_conv, ("channels", "kernel", "stride", "padding", "pool", "activation", "batch_norm",
                              "bias", "dropout", *SE_OPTIONS))
POOL = BlockKind(build_pool, ("type", "size", "stride"))


def check_maps(kind: str, shape: tuple[int, ...], where: str, advice: str = "") -> None:
    if len(shape) != 3:
        raise CnncliError(f"{where}: {kind} needs a (channels, height, width) input, got {shape}{advice}")


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2
