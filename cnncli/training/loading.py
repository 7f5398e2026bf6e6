"""Where a run's encoded splits live: decoded up front into memory, or streamed from their files.

`data.in_memory: auto` holds every split in memory when its encoded size fits the memory budget
(`data.memory_budget` GB; by default half the memory available when the run starts, shared by
the processes of one machine) and streams otherwise; the choice is printed. Streaming holds only
the list of samples: a first pass reads every training file once (in worker processes) to fit
the normalisation and to find unreadable files, then each batch is read from its files by
DataLoader workers while the network trains on the one before. Augmentation runs on the batch on
the device either way, so both paths train on the same numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.modalities.encoded import Encoded, finite_only
from cnncli.runtime.device import usable_cores
from cnncli.runtime.distributed import Cluster
from cnncli.runtime.progress import Progress
from cnncli.training.encoding import ENCODE_CHUNK, Batch, EncodedSplit, encode_split, encoded_chunks


@dataclass
class DataPlan:
    in_memory: bool
    workers: int  # DataLoader worker processes that decode (0: the training process itself)
    message: str  # the choice and why, for the log


def plan_data(data: Any, modality: Any, count: int, cluster: Cluster) -> DataPlan:
    """Hold `count` encoded samples in memory or stream them, as the recipe's `data` section says."""
    workers = data.workers if data.workers is not None else max(1, min(8, usable_cores() // cluster.local_world_size))
    size = count * math.prod(modality.input_shape) * torch.empty((), dtype=modality.input_dtype).element_size()
    budget = (data.memory_budget * 1e9 if data.memory_budget is not None
              else available_memory() / 2 / cluster.local_world_size)
    if not modality.can_stream:
        if data.in_memory is False:
            raise CnncliError(f"data.in_memory: {modality.name} samples are always held in memory; "
                              "set it to auto or true")
        in_memory, why = True, f"{modality.name} samples are always held in memory"
    elif data.in_memory == "auto":
        in_memory = size <= budget
        why = f"{'within' if in_memory else 'over'} the memory budget of {budget / 1e9:.1f} GB"
    else:
        in_memory, why = data.in_memory, f"data.in_memory={str(data.in_memory).lower()}"
    how = "decoded up front into memory" if in_memory else "streamed from their files a batch at a time"
    message = (f"data: {count} samples, {size / 1e9:.2f} GB encoded, {how} by {workers} worker "
               f"process{'es' if workers != 1 else ''} ({why})")
    return DataPlan(in_memory, workers, message)


def available_memory() -> float:
    """Bytes of memory the system could give this process now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def load_split(modality: Any, samples: Sequence[Sample], labels: list[str], name: str, plan: DataPlan,
               progress: Progress = Progress(), fit: bool = False) -> EncodedSplit:
    """One split as the plan says; with `fit` (the training split), fit the modality's statistics
    (normalisation) on it first."""
    if plan.in_memory or not samples:
        split = encode_split(modality, samples, labels, name, progress, plan.workers)
        if fit and len(split.data):
            modality.fit_encoded(split.data.inputs)
        return split
    index_of = {label: i for i, label in enumerate(labels)}
    if not fit:  # unreadable files are met, and skipped, when they are evaluated
        targets = [index_of[sample.label] for sample in samples]
        return EncodedSplit(StreamedData(SampleDataset(modality, samples, targets), plan.workers), [],
                            list(range(len(samples))))
    readable, failures, notes = [], {}, []
    with progress.task(f"reading {name} ({len(samples)})", len(samples)) as advance:

        def chunks() -> Iterator[torch.Tensor]:
            for start, encoded in encoded_chunks(modality, samples, plan.workers):
                readable.extend(start + position for position in encoded.index)
                failures.update({start + position: error for position, error in encoded.failures.items()})
                notes.extend(note for note in encoded.notes if note not in notes)
                advance(min(ENCODE_CHUNK, len(samples) - start))
                yield encoded.tensor

        stream = chunks()
        modality.fit_encoded_chunks(stream)
        for _ in stream:  # the rest of the pass, when the modality needed none of it
            pass
    kept = [samples[position] for position in readable]
    dataset = SampleDataset(modality, kept, [index_of[sample.label] for sample in kept])
    return EncodedSplit(StreamedData(dataset, plan.workers), [failures[i] for i in sorted(failures)], readable,
                        notes)


class SampleDataset(Dataset):
    """Samples encoded one at a time, where they are needed (in a DataLoader worker)."""

    def __init__(self, modality: Any, samples: Sequence[Sample], targets: list[int]):
        self.modality, self.samples = modality, samples
        self.targets = torch.tensor(targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | None, str | None]:
        sample = self.samples[position]
        try:
            tensor = self.modality.encode(sample)
        except CnncliError as error:
            return position, None, str(error)
        checked = finite_only(Encoded(tensor.unsqueeze(0), [0], {}), [sample])  # NaN would poison a batch
        return (position, tensor, None) if checked.index else (position, None, checked.failures[0])


def _collate(items: list) -> tuple[torch.Tensor | None, torch.Tensor, dict[int, str]]:
    """(stacked inputs of the readable samples or None, their positions, {position: error})."""
    readable = [(position, tensor) for position, tensor, error in items if error is None]
    inputs = torch.stack([tensor for _, tensor in readable]) if readable else None
    return inputs, torch.tensor([position for position, _ in readable], dtype=torch.long), \
        {position: error for position, _, error in items if error is not None}


@dataclass
class StreamedData:
    """A split read from its files batch by batch; only the sample list is held in memory."""

    dataset: SampleDataset
    workers: int
    failures: dict[int, str] = field(default_factory=dict)  # samples that could not be read when evaluated

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def targets(self) -> torch.Tensor:
        return self.dataset.targets

    def to(self, device: torch.device) -> "StreamedData":
        return self  # batches go to the device as they are read

    def batches(self, shares: Iterable[torch.Tensor], device: torch.device,
                skip_unreadable: bool = False) -> Iterator[Batch]:
        """Each share's rows read by worker processes a few batches ahead, copied to the device
        from pinned memory without waiting. An unreadable sample is an error while training (the
        first pass found every training file readable) and is skipped and recorded otherwise."""
        lists = [share.tolist() for share in shares]
        if not lists:
            return
        # its own generator: a DataLoader draws its workers' seeds, which must not move the dropout stream
        loader = DataLoader(self.dataset, batch_sampler=lists, num_workers=self.workers, collate_fn=_collate,
                            pin_memory=device.type == "cuda", generator=torch.Generator())
        for inputs, positions, failures in loader:
            if failures and not skip_unreadable:
                raise CnncliError(f"{next(iter(failures.values()))} (it was readable when training started)")
            self.failures.update(failures)
            if inputs is not None:
                targets = self.dataset.targets[positions]
                yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
