"""Hand-written PyTorch reference for a small residual network on CIFAR-10 photos (no cnncli import).

The network bench/residual_speed.py gives cnncli as a recipe, written out as plain modules and
a plain loop: a 3 x 3 stem convolution, residual blocks as torchvision's BasicBlock (two 3 x 3
convolutions with batch norm, a 1 x 1 projection with batch norm when the channels or the
stride change, ReLU after the sum), a global average pool and a linear classifier. The first
--per-class JPEGs of each class folder (sorted by name) are decoded once into a uint8 tensor;
batches are normalised on the fly with the per-channel mean and std of those pixels. Adam at a
constant rate (fused, as cnncli steps it), a fresh randperm per epoch, no augmentation.

    python bench/reference/residual.py [--root /work/data/train] [--per-class 500] [--epochs 1]
        [--batch 64] [--threads 1] [--seed 0] [--device cpu]

Prints one JSON line: images_per_second (training only: the decode is not timed), the last
epoch's mean training loss, seconds, parameters.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

CIFAR = Path("/work/data/train")
STAGES = [(16, 1), (32, 2), (64, 2)]  # (channels, stride) of each residual block, after a 16-channel stem


class BasicBlock(nn.Module):
    """conv3x3 - bn - relu - conv3x3 - bn, plus the input (projected when the shape changes), relu."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def build_model(classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    channels = 16
    for out_channels, stride in STAGES:
        layers.append(BasicBlock(channels, out_channels, stride))
        channels = out_channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


def load_images(root: Path, per_class: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 images N x 3 x 32 x 32, int64 labels, class names): the first `per_class` files of each folder."""
    classes = sorted(folder.name for folder in root.iterdir() if folder.is_dir())
    pictures, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).glob("*.jpg"))[:per_class]:
            with Image.open(path) as image:
                pictures.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    images = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels), classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=CIFAR, help="a folder per class of JPEGs")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    images, labels, classes = load_images(args.root, args.per_class)
    values = images.to(torch.float64) / 255.0
    mean = values.mean(dim=(0, 2, 3)).float().view(1, 3, 1, 1).to(device)
    std = values.std(dim=(0, 2, 3), unbiased=False).float().view(1, 3, 1, 1).to(device)
    del values
    images, labels = images.to(device), labels.to(device)

    torch.manual_seed(args.seed)
    model = build_model(len(classes)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)
    order_generator = torch.Generator().manual_seed(args.seed)
    train_seconds, seen, mean_loss = 0.0, 0, float("nan")
    model.train()
    for _ in range(args.epochs):
        started = time.perf_counter()
        loss_sum, counted = torch.zeros((), device=device), 0
        order = torch.randperm(len(labels), generator=order_generator).to(device)
        for index in order.split(args.batch):
            if len(index) < 2:  # batch norm cannot train on one sample
                continue
            batch = (images[index].float() / 255.0 - mean) / std
            loss = F.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(index)
            counted += len(index)
        mean_loss = float(loss_sum) / counted  # waits for a GPU's queued steps
        train_seconds += time.perf_counter() - started
        seen += counted
    print(json.dumps({
        "images_per_second": round(seen / train_seconds, 1), "train_loss": round(mean_loss, 5),
        "train_seconds": round(train_seconds, 2), "images": len(labels), "epochs": args.epochs,
        "batch": args.batch, "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__, "device": str(device),
    }))


if __name__ == "__main__":
    main()
