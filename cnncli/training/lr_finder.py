"""`cnncli train RECIPE --find-lr`: the learning-rate range test (Smith 2015; fastai's lr_find).

Train from the recipe's starting point while the learning rate grows exponentially from
`start` to `end`, one step per batch, and record the smoothed loss. Stop once the loss
diverges (four times its minimum). The suggestion is the rate where the smoothed loss falls
fastest, which is a good default for a constant or decaying schedule.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from cnncli.errors import CnncliError
from cnncli.files.atomic import check_writable, write_file
from cnncli.recipe.schema import Config
from cnncli.runtime.distributed import from_environment
from cnncli.runtime.progress import Progress
from cnncli.training.engine import training_step
from cnncli.training.optim import build_optimizer
from cnncli.training.train import prepare


def find_lr(config: Config, start: float = 1e-6, end: float = 1.0, steps: int = 100,
            progress: Progress = Progress(), cache: Path | None = None) -> dict:
    """{'lr': [...], 'loss': [...], 'suggestion': float}; the network is thrown away afterwards.
    `cache`: see cnncli.training.train.prepare."""

    if from_environment().distributed:
        raise CnncliError("--find-lr: the range test runs in one process; start it without torchrun")
    run = prepare(config, progress, cache)
    network, modality, device = run.network.to(run.device), run.modality, run.device
    data = run.train.to(device)
    optimizer = build_optimizer(network.parameters(), config.train)
    factor = (end / start) ** (1 / max(steps - 1, 1))
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    order = torch.Generator().manual_seed(config.train.seed)
    batch_size = min(config.train.batch_size, len(data))
    rates, losses, smoothed, best = [], [], 0.0, math.inf
    network.train()
    with progress.task("finding the learning rate", steps) as advance:
        for step in range(steps):
            rate = start * factor ** step
            for group in optimizer.param_groups:
                group["lr"] = rate
            index = torch.randperm(len(data), generator=order)[:batch_size]
            inputs, targets = next(data.batches([index], device))
            loss, _ = training_step(network, modality, inputs, targets, optimizer, config.train, generator)
            advance(1)
            smoothed = 0.9 * smoothed + 0.1 * loss.item()
            value = smoothed / (1 - 0.9 ** (step + 1))  # bias-corrected running mean
            if not math.isfinite(value):
                break
            rates.append(rate)
            losses.append(round(value, 5))
            best = min(best, value)
            if step > 10 and value > 4 * best:
                break
    return {"lr": rates, "loss": losses, "suggestion": suggest(rates, losses)}


def suggest(rates: list[float], losses: list[float]) -> float | None:
    """The rate at the steepest descent of loss against log(rate), ignoring the noisy ends."""
    if len(rates) < 5:
        return None
    slopes = [(losses[i + 1] - losses[i - 1]) / (math.log(rates[i + 1]) - math.log(rates[i - 1]))
              for i in range(1, len(rates) - 1)]
    margin = max(1, len(slopes) // 10)
    window = slopes[margin:-margin] or slopes
    steepest = min(range(len(window)), key=window.__getitem__) + margin + 1
    return rates[steepest]


def lr_plot_png(result: dict) -> bytes:
    """The smoothed loss against the learning rate (log scale), the suggestion marked."""
    from cnncli.output.plots import figure_png, plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.plot(result["lr"], result["loss"])
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("smoothed training loss")
    if result["suggestion"]:
        axis.axvline(result["suggestion"], color="red", linestyle="--", label=f"suggested {result['suggestion']:.2e}")
        axis.legend()
    axis.grid(alpha=0.3)
    return figure_png(figure)


def lr_range_test(config: Config, out: Path, progress: Progress = Progress(), cache: Path | None = None) -> dict:
    """`find_lr`, with its plot written to OUT/lr_find.png (named in the result as "plot")."""
    plot = Path(out) / "lr_find.png"
    check_writable(plot, "--out")
    result = find_lr(config, progress=progress, cache=cache)
    write_file(plot, lr_plot_png(result))
    return {**result, "plot": str(plot)}
