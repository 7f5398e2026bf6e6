"""Several processes training one network: torchrun's environment, the process group, and the
few collective operations the training loop needs.

`torchrun --nproc-per-node N -m cnncli train RECIPE` starts N copies of cnncli with RANK,
WORLD_SIZE, LOCAL_RANK and a rendezvous address in their environment. Each joins one process
group (NCCL between GPUs, gloo on CPUs), trains its share of every global batch under PyTorch's
DistributedDataParallel, and agrees with the others on every metric; only rank 0 writes and
prints. Without torchrun this is one process, and every operation here does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cnncli.errors import CnncliError


@dataclass(frozen=True)
class Cluster:
    """This process's place among those training together (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # its index on its own machine: which GPU it drives
    local_world_size: int = 1  # processes on its machine, which share its memory and cores

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes files and prints (rank 0 only)."""
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """A random stream of this rank's own (dropout, augmentation): rank 0 keeps `seed`, so one
        process draws exactly what it always drew."""
        return seed + 100_003 * self.rank

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch of row indices: contiguous parts whose sizes differ
        by at most one, so that together the ranks see each row once."""
        return batch if self.world_size == 1 else batch.tensor_split(self.world_size)[self.rank]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over every rank (in place; the same tensor in one process)."""
        if self.distributed:
            dist.all_reduce(values)
        return values

    def gather(self, value: Any) -> list:
        """Every rank's `value` (small picklable things), in rank order."""
        if not self.distributed:
            return [value]
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (batch-norm statistics) on every rank, as DDP does before each forward
        pass, so that all ranks validate and keep the same network."""
        if self.distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)

    def parallel(self, network: nn.Module, device: torch.device, sync_batch_norm: bool) -> nn.Module:
        """The module a training step calls: the network itself in one process, DDP around it
        (averaging gradients over the ranks) in several."""
        if not self.distributed:
            return network
        if sync_batch_norm:
            network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
        return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)


SINGLE = Cluster()


def from_environment() -> Cluster:
    """The cluster torchrun describes in the environment (one process when it did not start us)."""
    environment = os.environ
    world_size = int(environment.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    return Cluster(rank=int(environment["RANK"]), world_size=world_size,
                   local_rank=int(environment.get("LOCAL_RANK", "0")),
                   local_world_size=int(environment.get("LOCAL_WORLD_SIZE", "1")))


@contextmanager
def joined(device: torch.device, sync_batch_norm: bool = False) -> Iterator[Cluster]:
    """Join the process group torchrun set up for the length of the block (NCCL for GPUs, gloo for
    CPUs) and leave it afterwards; in one process, do nothing. A group the caller created already
    is used as it is."""
    cluster = from_environment()
    if not cluster.distributed:
        yield cluster
        return
    if sync_batch_norm and device.type != "cuda":
        raise CnncliError("train.sync_batch_norm: PyTorch synchronises batch norm between GPUs only; on CPUs "
                          "set it to false (each process then normalises its own share of a batch)")
    if dist.is_initialized():
        yield cluster
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield cluster
        dist.barrier()  # nobody leaves while rank 0 still writes the bundle
    finally:
        dist.destroy_process_group()
