"""Samples -> tensors: a split encoded by its modality, shared by training and evaluation.

A split held in memory is one preallocated tensor filled chunk by chunk as DataLoader worker
processes encode the chunks, so decoding uses every core and the peak is the tensor itself plus a
few chunks in flight. The engine reads any split (in memory, `Rows` of one, or streamed from files
by cnncli.training.loading) the same way: `data.batches(lists of row indices, device)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from cnncli.data.sample import Sample
from cnncli.runtime.progress import Progress

ENCODE_CHUNK = 256  # samples a worker encodes per call: the audio features' batch, a few MB of pixels
Batch = tuple[torch.Tensor, torch.Tensor]  # (encoded inputs, class indices) on the training device


@dataclass
class TensorData:
    """Encoded inputs and their class indices, held in memory."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def to(self, device: torch.device) -> "TensorData":
        """On `device` once for the whole fit; on a GPU only while the inputs take under half its free
        memory (otherwise each batch is copied over as it is needed)."""
        if device.type == "cuda" and self.inputs.nbytes > torch.cuda.mem_get_info(device)[0] // 2:
            return self
        return TensorData(self.inputs.to(device), self.targets.to(device))

    def batches(self, shares: Iterable[torch.Tensor], device: torch.device,
                skip_unreadable: bool = False) -> Iterator[Batch]:
        """The rows each index tensor of `shares` names, in order, on `device`."""
        for index in shares:
            index = index.to(self.inputs.device)
            yield (self.inputs[index].to(device, non_blocking=True),
                   self.targets[index].to(device, non_blocking=True))


class Rows:
    """Some rows of a split without a copy of them (an ensemble member's training folds)."""

    def __init__(self, data: Any, rows: torch.Tensor):
        self.data, self.rows = data, rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def targets(self) -> torch.Tensor:
        return self.data.targets[self.rows.to(self.data.targets.device)]

    @property
    def inputs(self) -> torch.Tensor:
        """The rows' inputs, copied (for inspection; training reads them batch by batch)."""
        return self.data.inputs[self.rows.to(self.data.inputs.device)]

    def to(self, device: torch.device) -> "Rows":
        return Rows(self.data.to(device), self.rows)

    def batches(self, shares: Iterable[torch.Tensor], device: torch.device,
                skip_unreadable: bool = False) -> Iterator[Batch]:
        return self.data.batches((self.rows[index] for index in shares), device, skip_unreadable)


def rows_of(data: Any, mask: torch.Tensor) -> Rows:
    """The rows of `data` where `mask` is true."""
    picked = mask.nonzero().flatten()
    return Rows(data.data, data.rows[picked]) if isinstance(data, Rows) else Rows(data, picked)


@dataclass
class EncodedSplit:
    """One encoded split: its data, the errors of samples that could not be read, the position
    in the split's sample list of each row, and warnings about the work as a whole."""

    data: Any  # TensorData, or cnncli.training.loading.StreamedData
    failures: list[str]
    index: list[int]
    notes: list[str] = field(default_factory=list)


class _Chunks(Dataset):
    """Item i: the modality's `encode_many` of the i-th chunk of samples (its batched path: audio
    features a batch at a time, the feature cache)."""

    def __init__(self, modality: Any, samples: Sequence[Sample]):
        self.modality, self.samples = modality, samples

    def __len__(self) -> int:
        return -(-len(self.samples) // ENCODE_CHUNK)

    def __getitem__(self, chunk: int):
        return self.modality.encode_many(self.samples[chunk * ENCODE_CHUNK:(chunk + 1) * ENCODE_CHUNK])


def encoded_chunks(modality: Any, samples: Sequence[Sample], workers: int) -> Iterator[tuple[int, Any]]:
    """(position of its first sample, Encoded) for consecutive chunks of `samples`, in order,
    encoded by `workers` processes (none for a single chunk: starting one would cost more)."""
    chunks = _Chunks(modality, samples)
    workers = max(0, min(workers, len(chunks) - 1))
    loader = DataLoader(chunks, batch_size=None, collate_fn=_unchanged, num_workers=workers,
                        generator=torch.Generator())  # its workers' seeds drawn apart from torch's own stream
    with _one_thread_while(workers > 0):
        for chunk, encoded in enumerate(loader):
            yield chunk * ENCODE_CHUNK, encoded


@contextlib.contextmanager
def _one_thread_while(workers_decode: bool):
    """While worker processes decode, this process only copies their chunks: one torch thread, so
    that idle OpenMP threads do not spin on the cores the workers need (with the GNU runtime's
    default wait policy, 2 workers on 2 cores decoded 1.4x as fast as one instead of 1.8x)."""
    threads = torch.get_num_threads()
    if workers_decode and threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _unchanged(item):
    return item


def encode_split(modality: Any, samples: Sequence[Sample], labels: list[str], name: str,
                 progress: Progress = Progress(), workers: int = 0) -> EncodedSplit:
    """Encode one split into one tensor (with a progress bar named `name`) and look up each row's
    class index; unreadable samples are left out and reported."""
    tensor = torch.empty((len(samples), *modality.input_shape), dtype=modality.input_dtype)
    index, failures, notes, filled = [], {}, [], 0
    if samples:
        with progress.task(f"preparing {name} ({len(samples)})", len(samples)) as advance:
            for start, encoded in encoded_chunks(modality, samples, workers):
                count = len(encoded.index)
                tensor[filled:filled + count] = encoded.tensor
                filled += count
                index += [start + position for position in encoded.index]
                failures.update({start + position: error for position, error in encoded.failures.items()})
                notes += [note for note in encoded.notes if note not in notes]
                advance(min(ENCODE_CHUNK, len(samples) - start))
    index_of = {label: i for i, label in enumerate(labels)}
    targets = torch.tensor([index_of[samples[i].label] for i in index], dtype=torch.long)
    inputs = tensor if filled == len(samples) else tensor[:filled]  # a view: the unused rows were never touched
    return EncodedSplit(TensorData(inputs, targets), [failures[i] for i in sorted(failures)], index, notes)
