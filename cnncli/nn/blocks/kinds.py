"""The registry of block kinds: the one list of what `model.blocks` may name.

A kind is written once, as its option names and how it builds. Its parameters are counted on
what it builds, its connections by cnncli.nn.layers on the built layers, and the size check
before training builds it on the meta device, where tensors have shapes but no storage. A new
kind (a residual block, a whole backbone) is one `BLOCKS.register` call, inside cnncli or out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from cnncli.registry import Registry


@dataclass(frozen=True)
class BlockKind:
    """How one kind of block is written in a recipe and built.

    `build(options, input_shape, where)` returns the block's module for inputs of `input_shape`
    (one sample, no batch axis), raising CnncliError naming `where` (`model.blocks[2]`) for a
    bad option. It creates its tensors on torch's default device, so that inside
    `torch.device("meta")` it allocates nothing. It may return `(module, output_shape)`: every
    real build checks that claim by a dry run, and the size check takes it instead of running
    the block on the meta device (torch's meta kernels take a second or two to load, once per
    process, which `predict` would pay on every call). Without it, the block's forward must
    need only shapes (no `.item()`)."""

    build: Callable[[Any, tuple[int, ...], str], Any]
    options: Collection[str] | None = ()  # the option names; None: the value is passed as written (a list)
    bare: str | None = None  # the option a bare number stands for: `dropout: 0.5` is `dropout: {p: 0.5}`
    prefix: str | None = None  # how its blocks are named when not after the kind: `fc1` for linear


BLOCKS = Registry("block", "model.blocks")
