"""Where a text network's training time goes: one epoch of a Kim CNN recipe, with cnncli's three
speed-ups switched on one at a time.

    plain        the full-width filters as 2-d convolutions, every batch at the full padded
                 height, Adam stepping tensor by tensor (cnncli before these changes)
    + conv1d     model.FullWidthConv2d: the same filters as 1-d convolutions over the rows
    + trim       batches cut to their longest sentence + the rows the filters need (exact)
    + fused adam Adam's fused kernel (cnncli now)

Same data, seed and batches for every variant; the recipe's augmentation runs as in training.
Prints samples per second and seconds per epoch (the best of --repeats epochs).

    python bench/text_speed.py [--recipe recipes/sst2.yaml] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("plain", "+ conv1d", "+ trim", "+ fused adam")


def epoch_seconds(config, run, variant: int, repeats: int) -> float:
    from cnncli.nn.blocks import FullWidthConv2d
    from cnncli.nn.model import build_network

    torch.manual_seed(0)
    network = build_network(config.model.blocks, run.modality.build_stem(), run.modality.input_shape,
                            len(run.splits.labels))
    if variant < 1:  # 2-d convolutions: the parent class's forward
        for module in network.modules():
            if isinstance(module, FullWidthConv2d):
                module.forward = torch.nn.Conv2d.forward.__get__(module)
    if variant < 2:
        network.stem.padding_margin = None
    optimizer = torch.optim.Adam(network.parameters(), lr=config.train.lr, fused=variant >= 3)
    inputs, targets = run.train.inputs, run.train.targets
    batch = config.train.batch_size
    generator = torch.Generator().manual_seed(0)
    network.train()
    best = float("inf")
    for _ in range(repeats):
        order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
        started = time.perf_counter()
        for start in range(0, len(order), batch):
            index = order[start:start + batch]
            loss = F.cross_entropy(network(run.modality.augment(inputs[index], generator)), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "sst2.yaml"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cnncli.recipe.config import load_config
    from cnncli.training.train import prepare

    config = load_config(args.recipe, ["train.ensemble=1", "train.rotate_val=false"])
    run = prepare(config)
    samples = len(run.train.targets)
    print(f"{Path(args.recipe).name}: {samples} training sentences, batch {config.train.batch_size}, "
          f"{args.threads} threads, torch {torch.__version__}")
    first = None
    for variant, name in enumerate(VARIANTS):
        seconds = epoch_seconds(config, run, variant, args.repeats)
        first = first or seconds
        print(f"{name:<14} {seconds:6.2f} s/epoch  {samples / seconds:7.0f} sentences/s  {first / seconds:4.2f}x")


if __name__ == "__main__":
    main()
