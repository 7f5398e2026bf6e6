"""Checks of block options that several kinds share; each error names its key
(`model.blocks[0].conv.kernel`)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

from cnncli.errors import CnncliError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}
LARGEST = 2 ** 40  # past any real layer, and far inside the 64-bit sizes torch works with


def size_pair(value: Any, key: str, full: tuple[int, int] | None = None, minimum: int = 1) -> tuple[int, int]:
    """(height, width) from one whole number or two; 'full' stands for that axis of `full`."""
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2:
        raise CnncliError(f"{key}: expected a number or [height, width], got {value!r}")
    pair = []
    for axis, item in enumerate(items):
        if item == "full" and full is not None:
            item = full[axis]
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise CnncliError(f"{key}: expected whole numbers >= {minimum} (or 'full'), got {value!r}")
        pair.append(_not_huge(item, key))
    return pair[0], pair[1]


def positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CnncliError(f"{key}: required, a whole number >= 1 (got {value!r})")
    return _not_huge(value, key)


def flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise CnncliError(f"{key}: expected true or false, got {value!r}")
    return value


def activation(name: Any, key: str) -> nn.Module:
    if name is None:
        name = "none"
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise CnncliError(f"{key}: unknown activation {name!r} (known: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]()


def add_tail(layers: OrderedDict, options: dict, key: str, batch_norm: nn.Module | None,
             gate: nn.Module | None = None) -> None:
    """What follows a conv or linear layer, in the lecture's order: batch norm, activation, a
    squeeze-and-excitation `gate` when given, dropout."""
    if batch_norm is not None:
        layers["bn"] = batch_norm
    layers["act"] = activation(options.get("activation", "relu"), f"{key}.activation")
    if gate is not None:
        layers["se"] = gate
    add_dropout(layers, options, f"{key}.dropout")


def add_dropout(layers: OrderedDict, options: dict, key: str) -> None:
    p = options.get("dropout", 0.0)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise CnncliError(f"{key}: expected a probability in [0, 1), got {p!r}")
    if p > 0:
        layers["drop"] = nn.Dropout(p)


def _not_huge(value: int, key: str) -> int:
    if value > LARGEST:
        raise CnncliError(f"{key}: at most {LARGEST:,} (got {value:,})")
    return value
