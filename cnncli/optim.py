"""Optimisers and learning-rate schedules named in a recipe's `train` section."""

from __future__ import annotations

import math

import torch

from cnncli.config import TrainConfig


def build_optimizer(parameters, train: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser over the trainable parameters (build it after moving them to the device)."""
    trainable = [p for p in parameters if p.requires_grad]
    if train.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=train.lr, weight_decay=train.weight_decay, **fused(trainable))
    if train.optimizer == "adamw":
        return torch.optim.AdamW(trainable, lr=train.lr, weight_decay=train.weight_decay, **fused(trainable))
    return torch.optim.SGD(trainable, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)


def fused(parameters: list[torch.Tensor]) -> dict:
    """Adam's fused kernel where it exists: one pass over all parameters instead of several per
    tensor. On 2 CPU cores it makes a step about 10x faster; with a text model's embedding table
    (a million parameters) the step had been a quarter of the training time."""
    usable = parameters and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)
    return {"fused": True} if usable and len({p.device for p in parameters}) == 1 else {}


def lr_factor(train: TrainConfig, total_steps: int):
    """step -> multiplier of train.lr, for the schedules that are a formula of the step."""
    floor = train.lr_min / train.lr
    if train.schedule == "exponential":
        # The lecture's decay: lr_min + (lr - lr_min) * exp(-step / decay_steps).
        return lambda step: floor + (1 - floor) * math.exp(-step / train.decay_steps)
    if train.schedule == "cosine":
        return lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return lambda step: 1.0


def build_schedule(optimizer: torch.optim.Optimizer, train: TrainConfig, total_steps: int):
    """A scheduler stepped once per optimiser step."""
    if train.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=max(total_steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(train, max(total_steps, 1)))
