"""What encoding gives: the rows that worked and an error per input that did not, and the checks
every modality's fitted numbers and encoded rows pass before they reach a network."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cnncli.data.sample import Sample
from cnncli.errors import CnncliError


@dataclass
class Encoded:
    """Encoded samples: one tensor for those that worked, and an error per sample that did not.

    `index[i]` is the position in the input sequence of row i of `tensor`; `failures` maps an
    input position to its error message (which names the file); `notes` are warnings about the
    work as a whole (a cache that could not be written), for the caller to show once.
    """

    tensor: torch.Tensor
    index: list[int]
    failures: dict[int, str]
    notes: list[str] = field(default_factory=list)


def state_numbers(state: dict[str, Any], key: str, count: int) -> list[float]:
    """`state[key]` (fitted statistics read from a bundle) if it is `count` numbers a fit can give;
    otherwise a CnncliError naming the key, before anything is built from it (not every input after)."""
    values = state.get(key)
    low, high = (1e-6, 1e6) if key == "std" else (-1e6, 1e6)  # a std divides; past 1e6, float32 overflows
    if not isinstance(values, list) or len(values) != count or not all(
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high for value in values):
        raise CnncliError(f"modality.state.{key}: expected {count} finite numbers from {low:g} to {high:g}")
    return [float(value) for value in values]


def finite_only(encoded: Encoded, samples: Sequence[Sample]) -> Encoded:
    """`encoded` with every row holding NaN or an infinity moved to the failures: such a sample
    would turn a whole training run's loss into NaN, or score NaN for every class."""
    if not encoded.tensor.is_floating_point() or not len(encoded.index):
        return encoded
    finite = torch.isfinite(encoded.tensor.reshape(len(encoded.tensor), -1)).all(dim=1)
    if bool(finite.all()):
        return encoded
    failures = dict(encoded.failures)
    for row in (~finite).nonzero().flatten().tolist():
        position = encoded.index[row]
        failures[position] = f"{samples[position].locator}: decodes to values that are not finite (NaN or infinity)"
    kept = finite.nonzero().flatten()
    index = [encoded.index[row] for row in kept.tolist()]
    return Encoded(encoded.tensor[kept], index, dict(sorted(failures.items())), encoded.notes)
