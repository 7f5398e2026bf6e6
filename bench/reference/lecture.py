"""Hand-written PyTorch reference for the image recipes (no cnncli import).

The lecture's MNIST configurations 1-3 (recipes/lecture-{1,2,3}.yaml) and the Fashion-MNIST
"best on CPU" network (recipes/fashion-best.yaml), written out as a plain nn.Sequential and a
plain loop: idx files read with gzip + numpy, pixels / 255 normalised with the training split's
mean and std, TensorFlow 'same' padding, Adam, the recipe's schedule stepped per optimizer step,
a fresh randperm per epoch, the final model evaluated once on the test split.

    python bench/reference/lecture.py --config 3 --data fashion [--seed 0] [--threads 2] [--steps N] [--device cuda]

On a GPU the whole data set (uint8) is copied to it once and batches are indexed there, as cnncli
does with data that fits; the timers read after a synchronise.

Prints one JSON line: accuracy, seconds (fit and total), images_per_second (training throughput),
parameters.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FASHION = Path("/usr/share/datasets/fashion-mnist")
MNIST_10K = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist-t10k"

# Hyper-parameters copied from the recipes; the harness checks the architectures match.
CONFIGS = {
    "1": dict(epochs=17, batch=100, lr=0.003, schedule="exponential", lr_min=0.0001, decay_steps=2000),
    "2": dict(epochs=17, batch=100, lr=0.003, schedule="exponential", lr_min=0.0001, decay_steps=2000),
    "3": dict(epochs=17, batch=100, lr=0.02, schedule="exponential", lr_min=0.0001, decay_steps=2000),
    "best": dict(epochs=30, batch=100, lr=0.003, schedule="cosine", lr_min=0.00001, label_smoothing=0.1,
                 shift=0.07, hflip=True),
}


def same_conv(in_channels: int, out_channels: int, kernel: int, stride: int, size: int, bias: bool = True):
    """A conv with TensorFlow's 'same' padding (extra pixel bottom/right); returns layers and output size."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before, after = total // 2, total - total // 2
    if before == after:
        return [nn.Conv2d(in_channels, out_channels, kernel, stride, padding=before, bias=bias)], out
    return [nn.ZeroPad2d((before, after, before, after)),
            nn.Conv2d(in_channels, out_channels, kernel, stride, bias=bias)], out


def build_model(config: str) -> nn.Sequential:
    """The recipe's network: convolutions, FC, classifier, created in the recipe's layer order."""
    layers: list[nn.Module] = []
    size = 28
    if config in ("1", "2", "3"):
        widths = {"1": [(4, 5, 1), (8, 5, 2), (12, 4, 2)], "2": [(6, 6, 1), (12, 5, 2), (24, 4, 2)],
                  "3": [(24, 6, 1), (48, 5, 2), (64, 4, 2)]}[config]
        batch_norm = config == "3"
    else:
        widths = [(32, 3, 1), (32, 3, 2), (64, 3, 1), (64, 3, 2), (128, 3, 1)]
        batch_norm = True
    channels = 1
    for out_channels, kernel, stride in widths:
        conv, size = same_conv(channels, out_channels, kernel, stride, size, bias=not batch_norm)
        layers += conv
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU())
        channels = out_channels
    features = 256 if config == "best" else 200
    layers += [nn.Flatten(), nn.Linear(channels * size * size, features, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(features))
    layers.append(nn.ReLU())
    dropout = {"1": 0.0, "2": 0.25, "3": 0.5, "best": 0.5}[config]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(features, 10))
    return nn.Sequential(*layers)


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_data(name: str, root: Path | None):
    """(train images, train labels, test images, test labels) as uint8 / int64 tensors."""
    if name == "fashion":
        root = root or FASHION
        parts = [read_idx(root / f"{prefix}-{kind}") for prefix in ("train", "t10k")
                 for kind in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz")]
    else:  # MNIST-10k: the t10k set, images 0-7,999 train and 8,000-9,999 test
        root = root or MNIST_10K
        images = read_idx(root / "t10k-images-idx3-ubyte.gz")
        labels = read_idx(root / "t10k-labels-idx1-ubyte.gz")
        parts = [images[:8000], labels[:8000], images[8000:], labels[8000:]]
    x_train, y_train, x_test, y_test = (torch.from_numpy(part.copy()) for part in parts)
    return x_train.unsqueeze(1), y_train.long(), x_test.unsqueeze(1), y_test.long()


def augment(batch: torch.Tensor, settings: dict, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, horizontal flip and translation (fractions of the size), bilinear, zero fill."""
    n = len(batch)
    uniform = lambda: torch.rand(n, generator=generator) * 2 - 1  # noqa: E731
    angle = uniform() * math.radians(settings.get("rotate", 0.0))
    scale_x = torch.ones(n)
    if settings.get("hflip"):
        scale_x = torch.where(torch.rand(n, generator=generator) < 0.5, -scale_x, scale_x)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) * scale_x
    theta[:, 0, 1] = -torch.sin(angle)
    theta[:, 1, 0] = torch.sin(angle) * scale_x
    theta[:, 1, 1] = torch.cos(angle)
    theta[:, 0, 2] = uniform() * 2 * settings.get("shift", 0.0)
    theta[:, 1, 2] = uniform() * 2 * settings.get("shift", 0.0)
    grid = F.affine_grid(theta.to(batch.device), list(batch.shape), align_corners=False)
    return F.grid_sample(batch.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--data", choices=("fashion", "mnist10k"), default="fashion")
    parser.add_argument("--root", type=Path, default=None, help="folder of the idx files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead (smoke checks)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    settings = CONFIGS[args.config]

    x_train, y_train, x_test, y_test = (part.to(device) for part in load_data(args.data, args.root))
    # Pixels are normalised on the fly per batch (as a model's first layer would), so memory holds uint8.
    values = x_train.to(torch.float64) / 255.0
    mean = round(float(values.mean()), 6)
    std = round(math.sqrt(max(float((values ** 2).mean()) - float(values.mean()) ** 2, 1e-12)), 6)
    del values

    torch.manual_seed(args.seed)
    model = build_model(args.config).to(device)
    torch.manual_seed(args.seed)
    order_generator = torch.Generator().manual_seed(args.seed)
    augment_generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"], fused=True)  # as cnncli steps Adam
    steps_per_epoch = math.ceil(len(y_train) / settings["batch"])
    total_steps = args.steps or settings["epochs"] * steps_per_epoch
    floor = settings["lr_min"] / settings["lr"]

    def factor(step: int) -> float:  # the multiplier of lr after `step` optimizer steps
        if settings["schedule"] == "exponential":
            return floor + (1 - floor) * math.exp(-step / settings["decay_steps"])
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    fit_started = time.perf_counter()
    step, train_seconds, seen = 0, 0.0, 0
    while step < total_steps:
        model.train()
        epoch_started, seen_before = time.perf_counter(), seen
        order = torch.randperm(len(y_train), generator=order_generator).to(device)
        for start in range(0, len(order), settings["batch"]):
            index = order[start:start + settings["batch"]]
            if len(index) < 2:  # batch norm cannot train on one sample
                continue
            batch = x_train[index]
            if settings.get("shift") or settings.get("rotate") or settings.get("hflip"):
                batch = augment(batch, settings, augment_generator)
            batch = (batch.float() / 255.0 - mean) / std
            loss = F.cross_entropy(model(batch), y_train[index], label_smoothing=settings.get("label_smoothing", 0.0))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(index)
            step += 1
            if step >= total_steps:
                break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_seconds = time.perf_counter() - epoch_started
        train_seconds += epoch_seconds
        last_epoch_rate = (seen - seen_before) / epoch_seconds
    fit_seconds = time.perf_counter() - fit_started

    model.eval()
    correct = 0
    with torch.no_grad():
        for chunk, targets in zip(x_test.split(512), y_test.split(512)):
            correct += int((model((chunk.float() / 255.0 - mean) / std).argmax(1) == targets).sum())
    print(json.dumps({
        "accuracy": round(correct / len(y_test), 4), "n_test": len(y_test), "steps": step,
        "fit_seconds": round(fit_seconds, 2), "total_seconds": round(time.perf_counter() - started, 2),
        "images_per_second": round(seen / train_seconds, 1),
        "last_epoch_images_per_second": round(last_epoch_rate, 1), "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__, "device": str(device),
    }))


if __name__ == "__main__":
    main()
