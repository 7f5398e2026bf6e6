"""The one place that picks where tensors live and how many CPU threads torch uses."""

from __future__ import annotations

import time

import torch

from cnncli.errors import CnncliError


def pick_device(name: str = "auto"):
    """'auto' -> CUDA when present, else CPU; 'cpu', 'cuda', 'cuda:1' as asked (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CnncliError(f"--device {name}: not a device name (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnncliError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    return device


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise CnncliError(f"train.threads: must be at least 1, got {threads}")
        torch.set_num_threads(threads)


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
