"""Optimisers and learning-rate schedules, by the names a recipe's `train` section gives them.

Their names are registered in cnncli.names (OPTIMIZERS, SCHEDULES), the one list the recipe
schema checks against; each name points at one function here.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cnncli.names import OPTIMIZERS, SCHEDULES


def build_optimizer(parameters, train: Any):
    """The recipe's optimiser over the trainable parameters (build it after moving them to the device)."""
    trainable = [p for p in parameters if p.requires_grad]
    return OPTIMIZERS.get(train.optimizer)(trainable, train)


def adam(parameters: list, train: Any):
    return torch.optim.Adam(parameters, lr=train.lr, weight_decay=train.weight_decay, **fused(parameters))


def adamw(parameters: list, train: Any):
    return torch.optim.AdamW(parameters, lr=train.lr, weight_decay=train.weight_decay, **fused(parameters))


def sgd(parameters: list, train: Any):
    return torch.optim.SGD(parameters, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)


def fused(parameters: list) -> dict:
    """Adam's fused kernel where it exists: one pass over all parameters instead of several per
    tensor. On 2 CPU cores it makes a step about 10x faster; with a text model's embedding table
    (a million parameters) the step had been a quarter of the training time."""
    usable = parameters and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)
    return {"fused": True} if usable and len({p.device for p in parameters}) == 1 else {}


def build_schedule(optimizer, train: Any, total_steps: int):
    """A scheduler stepped once per optimiser step."""
    return SCHEDULES.get(train.schedule)(optimizer, train, max(total_steps, 1))


def constant(optimizer, train: Any, total_steps: int):
    return _by_step(optimizer, lambda step: 1.0)


def exponential(optimizer, train: Any, total_steps: int):
    """The lecture's decay: lr_min + (lr - lr_min) * exp(-step / decay_steps)."""
    floor = train.lr_min / train.lr
    return _by_step(optimizer, lambda step: floor + (1 - floor) * math.exp(-step / train.decay_steps))


def cosine(optimizer, train: Any, total_steps: int):
    """From lr down to lr_min along half a cosine over the whole run."""
    floor = train.lr_min / train.lr
    return _by_step(optimizer, lambda step: floor + (1 - floor) * 0.5 * (
        1 + math.cos(math.pi * min(step, total_steps) / total_steps)))


def onecycle(optimizer, train: Any, total_steps: int):
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=total_steps)


def _by_step(optimizer, factor):
    """A schedule that multiplies train.lr by `factor(step)`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
