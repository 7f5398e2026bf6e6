"""Squeeze-and-excitation (Hu et al., 2018): a gate that rescales each channel of a block's
output by what the whole map says about it, `se: true` on conv, residual and separable blocks.

global average pool -> 1 x 1 reduce (channels x se_ratio) -> ReLU -> 1 x 1 expand -> sigmoid,
then the block's output times that gate, channel by channel. The gate is a path beside the
maps it scales (`beside`, read by cnncli.nn.layers): its global pool makes the gate depend on
the whole input, but it only weighs channels, so the receptive field of the values it scales,
and where Grad-CAM places them, are those of the convolutions that computed them (`gate`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnncli.errors import CnncliError
from cnncli.nn.blocks.options import flag

SE_OPTIONS = ("se", "se_ratio")


class ChannelScale(nn.Module):
    """Maps times one weight per (sample, channel): the gate applied, one multiplication per value."""

    def forward(self, maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return maps * weights

    def connections(self, output_shape: tuple[int, ...]) -> int:
        return math.prod(output_shape)


class SqueezeExcite(nn.Module):
    """The gate (pool, reduce, act, expand, gate) read from the input, and the input scaled by it."""

    beside = ("pool", "reduce", "act", "expand", "gate")  # a path from the block's input, beside the main one
    gate_only = True  # that path weighs channels: it leaves the receptive field of the values as it was

    def __init__(self, channels: int, ratio: float):
        super().__init__()
        inner = max(1, round(channels * ratio))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, inner, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(inner, channels, 1)
        self.gate = nn.Sigmoid()
        self.scale = ChannelScale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x, self.gate(self.expand(self.act(self.reduce(self.pool(x))))))


def squeeze_excite(options: dict, channels: int, key: str) -> SqueezeExcite | None:
    """The gate over `channels` that `se: true` asks for, or None; `key` is the block's
    (`model.blocks[2].conv`)."""
    wanted = flag(options.get("se", False), f"{key}.se")
    ratio = options.get("se_ratio", 0.25)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise CnncliError(f"{key}.se_ratio: expected a number in (0, 1], got {ratio!r}")
    if "se_ratio" in options and not wanted:
        raise CnncliError(f"{key}.se_ratio: only means something with se: true")
    return SqueezeExcite(channels, ratio) if wanted else None
