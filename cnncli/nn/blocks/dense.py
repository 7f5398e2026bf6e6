"""The block kinds that take any input: dropout, flatten and linear (fully connected)."""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from cnncli.nn.blocks.kinds import BlockKind
from cnncli.nn.blocks.options import add_dropout, add_tail, flag, positive_int


def build_dropout(options: dict, shape: tuple[int, ...], where: str) -> tuple[nn.Module, tuple[int, ...]]:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    add_dropout(layers, {"dropout": options.get("p", 0.5)}, f"{where}.dropout.p")
    return nn.Sequential(layers or OrderedDict(identity=nn.Identity())), shape


def build_flatten(options: dict, shape: tuple[int, ...], where: str) -> tuple[nn.Module, tuple[int, ...]]:
    return nn.Sequential(OrderedDict(flatten=nn.Flatten())), (math.prod(shape),)


def build_linear(options: dict, shape: tuple[int, ...], where: str) -> tuple[nn.Module, tuple[int, ...]]:
    features = positive_int(options.get("features"), f"{where}.linear.features")
    batch_norm = flag(options.get("batch_norm", False), f"{where}.linear.batch_norm")
    bias = flag(options.get("bias", not batch_norm), f"{where}.linear.bias")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if len(shape) != 1:
        layers["flatten"] = nn.Flatten()
    layers["linear"] = nn.Linear(math.prod(shape), features, bias=bias)
    add_tail(layers, options, f"{where}.linear", nn.BatchNorm1d(features) if batch_norm else None)
    return nn.Sequential(layers), (features,)


DROPOUT = BlockKind(build_dropout, ("p",), bare="p")
FLATTEN = BlockKind(build_flatten)
LINEAR = BlockKind(build_linear, ("features", "activation", "batch_norm", "bias", "dropout"), prefix="fc")
