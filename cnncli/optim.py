"""Optimisers and learning-rate schedules, by the names a recipe's `train` section gives them.

OPTIMIZERS and SCHEDULES are the only lists of those names: the recipe schema checks against
them, so a name is either known here or refused when the recipe is read.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cnncli.registry import Registry

OPTIMIZERS = Registry("optimizer", "train.optimizer")
SCHEDULES = Registry("schedule", "train.schedule")


def build_optimizer(parameters, train: Any):
    """The recipe's optimiser over the trainable parameters (build it after moving them to the device)."""
    trainable = [p for p in parameters if p.requires_grad]
    return OPTIMIZERS.get(train.optimizer)(trainable, train)


@OPTIMIZERS.register("adam")
def adam(parameters: list, train: Any):
    return torch.optim.Adam(parameters, lr=train.lr, weight_decay=train.weight_decay, **fused(parameters))


@OPTIMIZERS.register("adamw")
def adamw(parameters: list, train: Any):
    return torch.optim.AdamW(parameters, lr=train.lr, weight_decay=train.weight_decay, **fused(parameters))


@OPTIMIZERS.register("sgd")
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


def lr_factor(train: Any, total_steps: int):
    """step -> multiplier of train.lr, for the schedules that are a formula of the step."""
    floor = train.lr_min / train.lr
    if train.schedule == "exponential":
        # The lecture's decay: lr_min + (lr - lr_min) * exp(-step / decay_steps).
        return lambda step: floor + (1 - floor) * math.exp(-step / train.decay_steps)
    if train.schedule == "cosine":
        return lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return lambda step: 1.0


def _formula(optimizer, train: Any, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(train, total_steps))


def _one_cycle(optimizer, train: Any, total_steps: int):
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=total_steps)


for _name in ("constant", "exponential", "cosine"):
    SCHEDULES.register(_name, _formula)
SCHEDULES.register("onecycle", _one_cycle)
