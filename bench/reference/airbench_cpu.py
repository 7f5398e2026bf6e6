"""A hand-written reference for the general image recipe's network: airbench94 (Jordan 2024) on a CPU.

The conv-group nets of `model.blocks: auto` (cnncli.modalities.image_backbone) follow airbench's
network; this script trains that network the way airbench does, with nothing of cnncli, to say
what the network can reach on CIFAR-10 in a given number of epochs on this machine: a whitening
layer measured on 2 x 2 patches, dirac-initialised convolutions, batch norm with fixed scales,
GELU, Nesterov SGD at airbench's decoupled rates (biases of batch norm 64x), label smoothing 0.2,
a triangular schedule, lookahead averaging from epoch 3, alternating flips and 2-pixel
translations, and scoring with mirror and 1-pixel shifts.

Data: CIFAR-10's training JPEGs as class folders (shared/data/cifar10, unpacked). The last
`--val-per-class` files of each class (sorted by name) are the validation split; the first
`--train-per-class` train. The test split is not used.

    python bench/reference/airbench_cpu.py --cifar DIR --width 32 --epochs 10     # 45,000 / 5,000

`--ablate nesterov,smoothing,...` replaces some of airbench's settings by cnncli's (or plain) ones
(ABLATIONS says which), to weigh what each is worth before porting it.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


def read_cifar(root: Path, train_per_class: int, val_per_class: int):
    """(train images, train labels, val images, val labels): uint8 NCHW tensors and int64 labels."""
    parts = {"train": ([], []), "val": ([], [])}
    for label, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        files = sorted(folder.iterdir())
        for name, chosen in (("train", files[:train_per_class]), ("val", files[len(files) - val_per_class:])):
            images, labels = parts[name]
            images += [np.asarray(Image.open(path).convert("RGB")) for path in chosen]
            labels += [label] * len(chosen)
    return [tensor for name in ("train", "val") for tensor in (
        torch.from_numpy(np.stack(parts[name][0])).permute(0, 3, 1, 2).contiguous(),
        torch.tensor(parts[name][1]))]


ABLATIONS = {  # --ablate: airbench's settings replaced by cnncli's (or plain) ones, to say what each is worth
    "bn-defaults": "batch norm's eps 1e-5 and momentum 0.1", "bn-scale": "batch norm scales trained",
    "dirac": "convolutions without dirac init", "logit-scale": "logits not divided by 9",
    "bn-lr": "batch norm biases at the weights' rate, undecayed", "nesterov": "momentum 0.9, not Nesterov",
    "onecycle": "torch's one-cycle schedule", "smoothing": "label smoothing 0.1", "translate4": "4-pixel shifts",
    "whiten-bias": "whiten bias trained throughout", "alt-flip": "random flips each epoch",
    "lookahead": "no weight averaging", "floor": "whiten eigenvalue floor 0.1 x mean"}
ABLATE: set[str] = set()


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, channels: int):
        super().__init__(channels, **({} if "bn-defaults" in ABLATE else {"eps": 1e-12, "momentum": 0.4}))
        self.weight.requires_grad_("bn-scale" in ABLATE)


class Conv(nn.Conv2d):
    def __init__(self, inputs: int, outputs: int, kernel: int = 3, padding="same", bias: bool = False):
        super().__init__(inputs, outputs, kernel, padding=padding, bias=bias)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias is not None:
            self.bias.data.zero_()
        if "dirac" not in ABLATE:
            nn.init.dirac_(self.weight.data[:self.weight.size(1)])


class Group(nn.Module):
    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.conv1, self.norm1 = Conv(inputs, outputs), BatchNorm(outputs)
        self.conv2, self.norm2 = Conv(outputs, outputs), BatchNorm(outputs)

    def forward(self, x):
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class Scale(nn.Module):
    def forward(self, x):
        return x if "logit-scale" in ABLATE else x / 9


def network(width: int) -> nn.Sequential:
    net = nn.Sequential(Conv(3, 24, 2, padding=0, bias=True), nn.GELU(), Group(24, width), Group(width, 4 * width),
                        Group(4 * width, 4 * width), nn.MaxPool2d(3), nn.Flatten(),
                        nn.Linear(4 * width, 10, bias=False), Scale())
    net[0].weight.requires_grad_(False)
    return net


def whiten(layer: nn.Conv2d, images: torch.Tensor) -> None:
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 12).double()
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    floor = 0.1 * eigenvalues.mean() if "floor" in ABLATE else 5e-4
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + floor)[:, None]).flip(0).reshape(12, 3, 2, 2).float()
    layer.weight.data[:] = torch.cat([filters, -filters])


def translated(images: torch.Tensor, reach: int, generator: torch.Generator) -> torch.Tensor:
    padded = F.pad(images, (reach,) * 4, "reflect")
    shifts = torch.randint(0, 2 * reach + 1, (len(images), 2), generator=generator)
    out = torch.empty_like(images)
    side = images.shape[-1]
    for dy in range(2 * reach + 1):
        for dx in range(2 * reach + 1):
            mask = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            out[mask] = padded[mask, :, dy:dy + side, dx:dx + side]
    return out


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, views: bool) -> float:
    net.eval()
    outputs = []
    for batch in images.split(1000):
        if not views:
            outputs.append(net(batch))
            continue
        both = lambda x: 0.5 * net(x) + 0.5 * net(x.flip(-1))  # noqa: E731
        padded = F.pad(batch, (1,) * 4, "reflect")
        side = batch.shape[-1]
        outputs.append(0.5 * both(batch) + 0.25 * both(padded[:, :, :side, :side].contiguous())
                       + 0.25 * both(padded[:, :, 2:, 2:].contiguous()))
    net.train()
    return (torch.cat(outputs).argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", type=Path, required=True, help="CIFAR-10 training JPEGs, one folder per class")
    parser.add_argument("--width", type=int, default=64, help="the first group's channels (airbench94: 64)")
    parser.add_argument("--epochs", type=float, default=9.9)
    parser.add_argument("--train-per-class", type=int, default=4500)
    parser.add_argument("--val-per-class", type=int, default=500)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablate", default="", help=f"comma-separated, of: {', '.join(ABLATIONS)}")
    args = parser.parse_args()
    ABLATE.update(filter(None, args.ablate.split(",")))
    if ABLATE - set(ABLATIONS):
        parser.error(f"--ablate: unknown {', '.join(sorted(ABLATE - set(ABLATIONS)))}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    train_x, train_y, val_x, val_y = read_cifar(args.cifar, args.train_per_class, args.val_per_class)
    train_x, val_x = train_x.float() / 255, val_x.float() / 255
    mean, std = train_x.mean((0, 2, 3), keepdim=True), train_x.std((0, 2, 3), keepdim=True)
    train_x = ((train_x - mean) / std).contiguous(memory_format=torch.channels_last)
    val_x = ((val_x - mean) / std).contiguous(memory_format=torch.channels_last)
    net = network(args.width)
    whiten(net[0], train_x[:5000])
    net = net.to(memory_format=torch.channels_last)
    momentum = 0.85
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr, decay = 11.5 / kilostep, 0.0153 * args.batch / kilostep
    norms = [p for name, p in net.named_parameters() if "norm" in name and p.requires_grad]
    others = [p for name, p in net.named_parameters() if "norm" not in name and p.requires_grad]
    norm_lr = lr if "bn-lr" in ABLATE else lr * 64
    norm_decay = 0 if "bn-lr" in ABLATE else decay / norm_lr
    optimizer = torch.optim.SGD([{"params": norms, "lr": norm_lr, "weight_decay": norm_decay},
                                 {"params": others, "lr": lr, "weight_decay": decay / lr}],
                                momentum=0.9 if "nesterov" in ABLATE else momentum, nesterov="nesterov" not in ABLATE)
    bases = [group["lr"] for group in optimizer.param_groups]
    per_epoch = len(train_x) // args.batch
    total = math.ceil(per_epoch * args.epochs)
    schedule = np.interp(np.arange(total + 1), [0, int(0.23 * total), total], [0.2, 1, 0.07])
    if "onecycle" in ABLATE:  # torch's OneCycleLR: cosine up over 30% from 1/25, cosine down to 1/1e4 / 25
        rising = np.arange(total + 1) < 0.3 * total
        up = np.arange(total + 1) / (0.3 * total)
        down = (np.arange(total + 1) - 0.3 * total) / (0.7 * total)
        schedule = np.where(rising, 1 / 25 + (1 - 1 / 25) * (1 - np.cos(np.pi * up)) / 2,
                            4e-6 + (1 - 4e-6) * (1 + np.cos(np.pi * down)) / 2)
    smoothing = 0.1 if "smoothing" in ABLATE else 0.2
    reach = 4 if "translate4" in ABLATE else 2
    flipped = torch.where((torch.rand(len(train_x), generator=generator) < 0.5).view(-1, 1, 1, 1),
                          train_x.flip(-1), train_x)
    average, step = None, 0
    print(f"data read in {time.perf_counter() - started:.1f}s; {len(train_x):,} train, {len(val_x):,} val", flush=True)
    started = time.perf_counter()
    for epoch in range(math.ceil(args.epochs)):
        net[0].bias.requires_grad_(epoch < 3 or "whiten-bias" in ABLATE)
        if "alt-flip" in ABLATE:
            flipped = torch.where((torch.rand(len(train_x), generator=generator) < 0.5).view(-1, 1, 1, 1),
                                  train_x.flip(-1), train_x)
        images = translated(flipped, reach, generator)
        images = images.flip(-1) if epoch % 2 and "alt-flip" not in ABLATE else images
        order = torch.randperm(len(train_x), generator=generator)
        for index in range(per_epoch):
            rows = order[index * args.batch:(index + 1) * args.batch]
            for group, base in zip(optimizer.param_groups, bases):
                group["lr"] = base * schedule[step]
            outputs = net(images[rows].contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(outputs, train_y[rows], label_smoothing=smoothing, reduction="none").sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if epoch >= 3 and step % 5 == 0 and "lookahead" not in ABLATE:
                if average is None:
                    average = {key: value.clone() for key, value in net.state_dict().items()}
                else:
                    decay_now = 0.95 ** 5 * (step / total) ** 3
                    for (key, kept), value in zip(average.items(), net.state_dict().values()):
                        if value.dtype == torch.float:
                            kept.lerp_(value, 1 - decay_now)
                            value.copy_(kept)
            if step >= total:
                break
        if average is not None:
            for kept, value in zip(average.values(), net.state_dict().values()):
                if value.dtype == torch.float:
                    value.copy_(kept)
        print(f"epoch {epoch + 1}  steps {step}  val {accuracy(net, val_x, val_y, False):.4f}  "
              f"{time.perf_counter() - started:.0f}s", flush=True)
    print(f"final: val {accuracy(net, val_x, val_y, False):.4f}, with mirror and shifts "
          f"{accuracy(net, val_x, val_y, True):.4f}; training {time.perf_counter() - started:.0f}s "
          f"({args.width}-{4 * args.width}-{4 * args.width}, {args.epochs} epochs, {args.threads} threads)")


if __name__ == "__main__":
    main()
