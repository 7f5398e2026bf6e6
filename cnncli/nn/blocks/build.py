"""Block specs -> named modules, each kind looked up in BLOCKS, and the size of what they build.

Sizes are not worked out from the specs a second time: `estimate_blocks` builds the blocks on
the meta device, where tensors have shapes but no storage, and counts what was built. So a
recipe asking for 10^12 parameters is measured, and refused, without its memory being asked for.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict, defaultdict
from typing import Any, NamedTuple

import torch
from torch import nn

from cnncli.errors import CnncliError
from cnncli.nn.blocks.kinds import BLOCKS, BlockKind


class Size(NamedTuple):
    """What a stack of layers comes to for one sample."""

    shape: tuple[int, ...]  # its output shape
    parameters: int
    values: int  # values output by all its layers, about what training keeps for the backward pass


def build_blocks(specs: Any, shape: tuple[int, ...], key: str) -> tuple[nn.Sequential, tuple[int, ...]]:
    """Turn block specs into a named nn.Sequential (conv1, pool1, fc1, ...) on torch's default
    device; returns it and its output shape for inputs of `shape`."""
    if not isinstance(specs, list):
        raise CnncliError(f"{key}: expected a list of blocks")
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    counters: dict[str, int] = defaultdict(int)
    for index, spec in enumerate(specs):
        where = f"{key}[{index}]"
        name, options = parse_block(spec, where)
        kind: BlockKind = BLOCKS.get(name)
        module, shape = _build_one(kind, options, shape, where)
        prefix = kind.prefix or name
        counters[prefix] += 1
        modules[f"{prefix}{counters[prefix]}"] = module
    return nn.Sequential(modules), shape


def parse_block(spec: Any, where: str) -> tuple[str, Any]:
    """(kind, options) of one item of a block list, its option names checked against the kind's."""
    if isinstance(spec, str):
        spec = {spec: {}}
    if not isinstance(spec, dict) or len(spec) != 1:
        raise CnncliError(f"{where}: a block is a mapping with one type ({', '.join(BLOCKS)}), got {spec!r}")
    (name, options), = spec.items()
    if name not in BLOCKS:
        raise CnncliError(f"{where}: unknown block type {name!r} (known: {', '.join(BLOCKS)})")
    kind: BlockKind = BLOCKS.get(name)
    if kind.bare is not None and isinstance(options, (int, float)):
        options = {kind.bare: options}
    if kind.options is None:
        return name, options
    options = options or {}
    if not isinstance(options, dict):
        raise CnncliError(f"{where}.{name}: expected options as a mapping, got {options!r}")
    unknown = set(options) - set(kind.options)
    if unknown:
        raise CnncliError(f"{where}.{name}.{min(unknown)}: unknown option "
                          f"(known: {', '.join(sorted(kind.options))})")
    return name, options


def estimate_blocks(specs: Any, shape: tuple[int, ...], key: str) -> Size:
    """The Size of block specs on inputs of `shape`, from the blocks built on the meta device:
    nothing is allocated, and mistakes are reported as `build_blocks` reports them. Each layer
    is counted at its block's output shape (a parallel block's branches at theirs)."""
    with torch.device("meta"):
        backbone, out = build_blocks(specs, shape, key)
    return Size(out, sum(parameter.numel() for parameter in backbone.parameters()), _values(backbone))


def output_shape(module: nn.Module, shape: tuple[int, ...], dtype=torch.float32) -> tuple[int, ...]:
    """Shape of one sample after `module`, found by a dry run in eval mode on the module's device."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    device = tensor.device if tensor is not None else None  # None: torch's default device
    was_training = module.training
    module.eval()
    with torch.no_grad():
        out = module(torch.zeros((1, *shape), dtype=dtype, device=device))
    module.train(was_training)
    return tuple(out.shape[1:])


def _build_one(kind: BlockKind, options: Any, shape: tuple[int, ...], where: str):
    """One block's module and output shape; torch's refusals become one line naming the block."""
    try:
        built = kind.build(options, shape, where)
    except RuntimeError as error:  # sizes torch cannot hold
        raise CnncliError(f"{where}: cannot be built for an input of shape {shape} ({_first_line(error)})") from None
    module, claimed = built if isinstance(built, tuple) else (built, None)
    if claimed is not None and any(size <= 0 for size in claimed):
        raise CnncliError(f"{where}: does not fit its input of shape {shape} (its output would be {claimed})")
    if claimed is not None and torch.get_default_device().type == "meta":
        out = tuple(claimed)
    else:
        try:
            out = output_shape(module, shape)
        except RuntimeError as error:
            raise CnncliError(f"{where}: does not fit its input of shape {shape} ({_first_line(error)})") from None
        if claimed is not None and tuple(claimed) != out:
            raise RuntimeError(f"{where}: the block says its output is {claimed}, but it is {out}")
    if any(size <= 0 for size in out):
        raise CnncliError(f"{where}: its output would be empty for an input of shape {shape}")
    module.block_output = out  # for _values: what each layer of the block is counted at
    return module, out


def _values(module: nn.Module, shape: tuple[int, ...] = ()) -> int:
    """Values output by the leaf layers under `module`, each at the output shape of the
    innermost block holding it."""
    shape = getattr(module, "block_output", shape)
    children = list(module.children())
    if not children:
        return math.prod(shape)
    return sum(_values(child, shape) for child in children)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
