"""Samples -> tensors: a split encoded by its modality, shared by training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cnncli.data.sample import Sample
from cnncli.progress import Progress


@dataclass
class TensorData:
    """Encoded inputs and their class indices."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class EncodedSplit:
    """One encoded split: its tensors, the errors of samples that could not be read, the position
    in the split's sample list of each row, and warnings about the work as a whole."""

    data: TensorData
    failures: list[str]
    index: list[int]
    notes: list[str] = field(default_factory=list)


def encode_split(modality: Any, samples: Sequence[Sample], labels: list[str], name: str,
                 progress: Progress = Progress()) -> EncodedSplit:
    """Encode one split (with a progress bar named `name`) and look up each row's class index."""
    if not samples:
        empty = torch.empty((0, *modality.input_shape), dtype=modality.input_dtype)
        return EncodedSplit(TensorData(empty, torch.empty(0, dtype=torch.long)), [], [])
    with progress.task(f"preparing {name} ({len(samples)})", len(samples)) as advance:
        encoded = modality.encode_many(samples, advance)
    index_of = {label: i for i, label in enumerate(labels)}
    targets = torch.tensor([index_of[samples[i].label] for i in encoded.index], dtype=torch.long)
    return EncodedSplit(TensorData(encoded.tensor, targets), list(encoded.failures.values()), encoded.index,
                        encoded.notes)
