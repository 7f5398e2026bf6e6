"""Backbone blocks from recipe specs: conv, pool, dropout, flatten, linear, parallel.

A recipe's `model.blocks` is a list; each item names one block type and its options:

    - conv:    {channels: 24, kernel: 6, stride: 1, padding: same, batch_norm: true}
    - pool:    {type: max, size: 2}               # size: int, [h, w] or global
    - dropout: 0.5
    - flatten: {}
    - linear:  {features: 200, batch_norm: true, dropout: 0.5}
    - parallel:                                    # branches read the same input; outputs concatenated
        - [{conv: {channels: 100, kernel: [3, full]}}, {pool: {type: max, size: global}}]
        - [{conv: {channels: 100, kernel: [4, full]}}, {pool: {type: max, size: global}}]

`kernel: [h, full]` spans the whole input width (text: the embedding dimension). Padding `same`
follows TensorFlow's rule (output = ceil(input / stride), extra pixel at the bottom/right), so
the lecture's networks are reproduced exactly. The classifier (flatten + linear to the number
of classes) is appended for you. Block names (`conv1`, `pool1`, `fc1`, `parallel1.branch0.conv1`)
address layers for inspect and feature maps.
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnncli.errors import CnncliError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}
BLOCK_OPTIONS = {
    "conv": {"channels", "kernel", "stride", "padding", "activation", "batch_norm", "bias", "dropout"},
    "pool": {"type", "size", "stride"},
    "dropout": {"p"},
    "flatten": set(),
    "linear": {"features", "activation", "batch_norm", "bias", "dropout"},
    "parallel": set(),
}

class Parallel(nn.Module):
    """Run branches on the same input and concatenate their outputs along the channel axis."""

    def __init__(self, branches: list[nn.Sequential]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


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

def build_blocks(specs: list[Any], shape: tuple[int, ...], key: str):
    """Turn block specs into a named nn.Sequential; returns it and its output shape."""
    if not isinstance(specs, list):
        raise CnncliError(f"{key}: expected a list of blocks")
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    counters: dict[str, int] = defaultdict(int)
    for index, spec in enumerate(specs):
        where = f"{key}[{index}]"
        kind, options = parse_block(spec, where)
        if kind == "parallel":
            module, shape = build_parallel(options, shape, where)
        else:
            module, shape = BUILDERS[kind](options, shape, where)
        counters[kind] += 1
        name = {"linear": "fc"}.get(kind, kind) + str(counters[kind])
        modules[name] = module
    return nn.Sequential(modules), shape


def parse_block(spec: Any, where: str) -> tuple[str, Any]:
    if isinstance(spec, str):
        spec = {spec: {}}
    if not isinstance(spec, dict) or len(spec) != 1:
        raise CnncliError(f"{where}: a block is a mapping with one type ({', '.join(BLOCK_OPTIONS)}), got {spec!r}")
    (kind, options), = spec.items()
    if kind not in BLOCK_OPTIONS:
        raise CnncliError(f"{where}: unknown block type {kind!r} (known: {', '.join(BLOCK_OPTIONS)})")
    if kind == "dropout" and isinstance(options, (int, float)):
        options = {"p": options}
    if kind == "parallel":
        return kind, options
    options = options or {}
    if not isinstance(options, dict):
        raise CnncliError(f"{where}.{kind}: expected options as a mapping, got {options!r}")
    unknown = set(options) - BLOCK_OPTIONS[kind]
    if unknown:
        raise CnncliError(f"{where}.{kind}.{sorted(unknown)[0]}: unknown option "
                          f"(known: {', '.join(sorted(BLOCK_OPTIONS[kind]))})")
    return kind, options


def build_conv(options: dict, shape: tuple[int, ...], where: str):
    if len(shape) != 3:
        raise CnncliError(f"{where}: conv needs a (channels, height, width) input, got {shape}; "
                          "put conv blocks before flatten/linear")
    in_channels, height, width = shape
    channels = _positive_int(options.get("channels"), f"{where}.conv.channels")
    kernel = _pair(options.get("kernel", 3), f"{where}.conv.kernel", full=(height, width))
    stride = _pair(options.get("stride", 1), f"{where}.conv.stride")
    padding = options.get("padding", "valid")
    batch_norm = _bool(options.get("batch_norm", False), f"{where}.conv.batch_norm")
    bias = _bool(options.get("bias", not batch_norm), f"{where}.conv.bias")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if padding == "same":
        pads = [_same_padding(size, k, s) for size, k, s in zip((height, width), kernel, stride)]
        (top, bottom), (left, right) = pads
        if top == bottom and left == right:
            conv_padding = (top, left)
        else:
            layers["pad"] = nn.ZeroPad2d((left, right, top, bottom))
            conv_padding = (0, 0)
    elif padding == "valid":
        conv_padding = (0, 0)
    else:
        conv_padding = _pair(padding, f"{where}.conv.padding", minimum=0)
    conv = FullWidthConv2d if kernel[1] == width and conv_padding[1] == 0 else nn.Conv2d
    layers["conv"] = conv(in_channels, channels, kernel, stride=stride, padding=conv_padding, bias=bias)
    _add_tail(layers, options, f"{where}.conv", nn.BatchNorm2d(channels) if batch_norm else None)
    return _finish(layers, shape, where)


def build_pool(options: dict, shape: tuple[int, ...], where: str):
    if len(shape) != 3:
        raise CnncliError(f"{where}: pool needs a (channels, height, width) input, got {shape}")
    kind = options.get("type", "max")
    size = options.get("size", 2)
    if kind not in ("max", "avg"):
        raise CnncliError(f"{where}.pool.type: expected max or avg, got {kind!r}")
    if size == "global":
        module = nn.AdaptiveMaxPool2d(1) if kind == "max" else nn.AdaptiveAvgPool2d(1)
    else:
        size = _pair(size, f"{where}.pool.size", full=shape[1:])
        stride = _pair(options.get("stride", size), f"{where}.pool.stride")
        module = (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(size, stride=stride)
    return _finish(OrderedDict(pool=module), shape, where)


def build_dropout(options: dict, shape: tuple[int, ...], where: str):
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    _add_dropout(layers, {"dropout": options.get("p", 0.5)}, f"{where}.dropout.p")
    return _finish(layers or OrderedDict(identity=nn.Identity()), shape, where)


def build_flatten(options: dict, shape: tuple[int, ...], where: str):
    return _finish(OrderedDict(flatten=nn.Flatten()), shape, where)


def build_linear(options: dict, shape: tuple[int, ...], where: str):
    features = _positive_int(options.get("features"), f"{where}.linear.features")
    batch_norm = _bool(options.get("batch_norm", False), f"{where}.linear.batch_norm")
    bias = _bool(options.get("bias", not batch_norm), f"{where}.linear.bias")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if len(shape) != 1:
        layers["flatten"] = nn.Flatten()
    layers["linear"] = nn.Linear(math.prod(shape), features, bias=bias)
    _add_tail(layers, options, f"{where}.linear", nn.BatchNorm1d(features) if batch_norm else None)
    return _finish(layers, shape, where)


def build_parallel(options: Any, shape: tuple[int, ...], where: str):
    if not isinstance(options, list) or not options:
        raise CnncliError(f"{where}.parallel: expected a list of branches, each a list of blocks")
    branches, shapes = [], []
    for index, branch_specs in enumerate(options):
        branch, branch_shape = build_blocks(branch_specs, shape, f"{where}.parallel[{index}]")
        branches.append(branch)
        shapes.append(branch_shape)
    if any(other[1:] != shapes[0][1:] for other in shapes):
        raise CnncliError(f"{where}.parallel: branch outputs {shapes} differ beyond the channel axis; "
                          "end each branch with a global pool to concatenate them")
    module = Parallel(branches)
    return module, (sum(s[0] for s in shapes), *shapes[0][1:])


BUILDERS = {"conv": build_conv, "pool": build_pool, "dropout": build_dropout,
            "flatten": build_flatten, "linear": build_linear}


# ---------------------------------------------------------------------------------------------
# Sizes from the specs alone, before anything is built


def estimate_blocks(specs: Any, shape: tuple[int, ...], key: str) -> tuple[tuple[int, ...], int, int]:
    """(output shape, parameters, values output per sample) of block specs on inputs of `shape`,
    worked out from the specs without building a layer, so that a network too large to build is
    refused before its memory is asked for. Mistakes are reported as `build_blocks` reports them."""
    if not isinstance(specs, list):
        raise CnncliError(f"{key}: expected a list of blocks")
    parameters = activations = 0
    for index, spec in enumerate(specs):
        where = f"{key}[{index}]"
        kind, options = parse_block(spec, where)
        if kind == "parallel":
            if not isinstance(options, list) or not options:
                raise CnncliError(f"{where}.parallel: expected a list of branches, each a list of blocks")
            branches = [estimate_blocks(branch, shape, f"{where}.parallel[{i}]") for i, branch in enumerate(options)]
            shape = (sum(branch[0][0] for branch in branches), *branches[0][0][1:])
            block_parameters, block_values = sum(b[1] for b in branches), sum(b[2] for b in branches)
        else:
            shape, block_parameters, layers = _estimate_block(kind, options, shape, where)
            block_values = math.prod(shape) * layers
        if any(size <= 0 for size in shape):
            raise CnncliError(f"{where}: its output would be empty for its input")
        parameters += block_parameters
        activations += block_values
    return shape, parameters, activations


def _estimate_block(kind: str, options: dict, shape: tuple[int, ...], where: str) -> tuple[tuple, int, int]:
    """(output shape, parameters, layers) of one block that is not `parallel`."""
    if kind in ("conv", "pool") and len(shape) != 3:
        raise CnncliError(f"{where}: {kind} needs a (channels, height, width) input, got {shape}")
    if kind == "conv":
        in_channels, height, width = shape
        channels = _positive_int(options.get("channels"), f"{where}.conv.channels")
        kernel = _pair(options.get("kernel", 3), f"{where}.conv.kernel", full=(height, width))
        stride = _pair(options.get("stride", 1), f"{where}.conv.stride")
        padding = options.get("padding", "valid")
        if padding == "same":
            out = [math.ceil(size / s) for size, s in zip((height, width), stride)]
        else:
            pad = (0, 0) if padding == "valid" else _pair(padding, f"{where}.conv.padding", minimum=0)
            out = [(size + 2 * p - k) // s + 1 for size, p, k, s in zip((height, width), pad, kernel, stride)]
        batch_norm = options.get("batch_norm") is True
        weights = in_channels * channels * kernel[0] * kernel[1] + channels * (2 if batch_norm else 1)
        return (channels, *out), weights, 2 + batch_norm + bool(options.get("dropout"))
    if kind == "pool":
        if options.get("size", 2) == "global":
            return (shape[0], 1, 1), 0, 1
        size = _pair(options.get("size", 2), f"{where}.pool.size", full=shape[1:])
        stride = _pair(options.get("stride", size), f"{where}.pool.stride")
        return (shape[0], *[(n - k) // s + 1 for n, k, s in zip(shape[1:], size, stride)]), 0, 1
    if kind == "linear":
        features = _positive_int(options.get("features"), f"{where}.linear.features")
        batch_norm = options.get("batch_norm") is True
        weights = math.prod(shape) * features + features * (2 if batch_norm else 1)
        return (features,), weights, 2 + batch_norm + bool(options.get("dropout"))
    if kind == "flatten":
        return (math.prod(shape),), 0, 1
    return shape, 0, 1  # dropout


def output_shape(module: nn.Module, shape: tuple[int, ...], dtype=torch.float32) -> tuple[int, ...]:
    """Shape of one sample after `module`, found by a dry run in eval mode."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        out = module(torch.zeros((1, *shape), dtype=dtype))
    module.train(was_training)
    return tuple(out.shape[1:])


def _finish(layers: OrderedDict, shape: tuple[int, ...], where: str):
    module = nn.Sequential(layers)
    try:
        out = output_shape(module, shape)
    except RuntimeError as error:
        message = str(error).splitlines()[0]
        raise CnncliError(f"{where}: does not fit its input of shape {shape} ({message})") from None
    if any(size <= 0 for size in out):
        raise CnncliError(f"{where}: its output would be empty for an input of shape {shape}")
    return module, out


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pair(value: Any, key: str, full: tuple[int, int] | None = None, minimum: int = 1) -> tuple[int, int]:
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2:
        raise CnncliError(f"{key}: expected a number or [height, width], got {value!r}")
    pair = []
    for axis, item in enumerate(items):
        if item == "full" and full is not None:
            item = full[axis]
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise CnncliError(f"{key}: expected whole numbers >= {minimum} (or 'full'), got {value!r}")
        pair.append(item)
    return pair[0], pair[1]


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CnncliError(f"{key}: required, a whole number >= 1 (got {value!r})")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise CnncliError(f"{key}: expected true or false, got {value!r}")
    return value


def _activation(name: Any, key: str) -> nn.Module:
    if name is None:
        name = "none"
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise CnncliError(f"{key}: unknown activation {name!r} (known: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]()


def _add_tail(layers: OrderedDict, options: dict, key: str, batch_norm: nn.Module | None) -> None:
    """What follows a conv or linear layer, in the lecture's order: batch norm, activation, dropout."""
    if batch_norm is not None:
        layers["bn"] = batch_norm
    layers["act"] = _activation(options.get("activation", "relu"), f"{key}.activation")
    _add_dropout(layers, options, f"{key}.dropout")


def _add_dropout(layers: OrderedDict, options: dict, key: str) -> None:
    p = options.get("dropout", 0.0)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise CnncliError(f"{key}: expected a probability in [0, 1), got {p!r}")
    if p > 0:
        layers["drop"] = nn.Dropout(p)
