"""The one place that picks where tensors live, in what precision they train, and how many CPU
threads torch uses."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import torch
from torch import nn

from cnncli.errors import CnncliError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto", local_rank: int | None = None):
    """'auto' -> CUDA when present, else CPU; 'cpu', 'cuda', 'cuda:1' as asked (checked). One of
    several processes (`local_rank`, its index on its machine) takes its own GPU for 'cuda'."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CnncliError(f"--device {name}: not a device name (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnncliError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return device


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise CnncliError(f"train.threads: must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Precision:
    """How a training step computes: `fp32`, or autocast to bf16 / fp16 (with a gradient scaler
    for fp16, whose narrow range would otherwise flush small gradients to zero)."""

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.name]

    def autocast(self):
        """The context a forward pass and its loss run in (nothing at all for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None


FP32 = Precision("fp32", "cpu")


def pick_precision(name: str, device) -> Precision:
    """'auto' -> bf16 on a GPU that has it, fp16 (scaled) on an older GPU, fp32 on a CPU: CPU
    results stay exactly those of a plain float32 loop, and GPUs use their tensor cores."""
    if name == "auto":
        if device.type != "cuda":
            name = "fp32"
        else:
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name not in PRECISIONS:
        raise CnncliError(f"train.precision: unknown precision {name!r} (known: auto, {', '.join(PRECISIONS)})")
    return Precision(name, device.type)


def channels_last_helps(network: nn.Module, device) -> bool:
    """GPUs run 2-d convolutions fastest with channels last (NHWC), tensor cores above all. On a
    CPU so do the wide 3 x 3 convolutions of the conv-group nets (a whiten block first: 1.15x on
    2 cores); other networks keep the default layout there, so that the lecture's nets give
    exactly the results of a plain loop. (Subclasses such as the text network's full-width
    convolution run as 1-d convolutions and gain nothing.)"""
    if device.type != "cuda":
        return any(getattr(module, "fit_to_data", None) is not None for module in network.modules())
    return any(type(module) is nn.Conv2d for module in network.modules())


def measure_peak_gflops(device, seconds: float = 0.3) -> float:
    """This machine's float32 matrix-multiply rate in GFLOP/s: the yardstick for training speed."""

    size = 1024
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)  # warm-up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or count < 2:
        torch.mm(a, b)
        count += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * size ** 3 * count / (time.perf_counter() - started) / 1e9
