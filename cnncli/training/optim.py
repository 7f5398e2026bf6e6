"""Optimisers and learning-rate schedules, by the names a recipe's `train` section gives them.

Their names are registered in cnncli.names (OPTIMIZERS, SCHEDULES), the one list the recipe
schema checks against; each name points at one function here.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cnncli.names import OPTIMIZERS, SCHEDULES


def build_optimizer(parameters, train: Any, backbone=()):
    """The recipe's optimiser over the trainable parameters (build it after moving them to the
    device). Those of `backbone` learn at train.lr x train.backbone_lr (discriminative rates for
    fine-tuning): a second parameter group, after the first, whose rate the logs show. With
    train.decay_norm_and_bias false, biases and batch norm's scales and shifts (the parameters of
    one dimension) are not decayed: pulling them to 0 only fights the normalisation."""
    trainable = [p for p in parameters if p.requires_grad]
    scaled = {id(p) for p in backbone} if train.backbone_lr != 1 else set()
    groups = []
    for in_backbone in (False, True):
        rate = {"lr": train.lr * train.backbone_lr} if in_backbone else {}
        part = [p for p in trainable if (id(p) in scaled) == in_backbone]
        decays = [train.decay_norm_and_bias or p.dim() > 1 for p in part]
        groups += [{"params": [p for p, decayed in zip(part, decays) if decayed], **rate},
                   {"params": [p for p, decayed in zip(part, decays) if not decayed], "weight_decay": 0.0, **rate}]
    groups = [group for group in groups if group["params"]]
    if len(groups) == 1 and len(groups[0]) == 1:  # one group with the recipe's settings
        return OPTIMIZERS.get(train.optimizer)(trainable, train)
    return OPTIMIZERS.get(train.optimizer)(groups, train)


def adam(parameters: list, train: Any):
    return torch.optim.Adam(parameters, lr=train.lr, weight_decay=train.weight_decay, **fused(parameters))


def adamw(parameters: list, train: Any):
    return torch.optim.AdamW(parameters, lr=train.lr, weight_decay=train.weight_decay, **fused(parameters))


def sgd(parameters: list, train: Any):
    return torch.optim.SGD(parameters, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay,
                           nesterov=train.nesterov)


def fused(parameters: list) -> dict:
    """Adam's fused kernel where it exists: one pass over all parameters instead of several per
    tensor. On 2 CPU cores it makes a step about 10x faster; with a text model's embedding table
    (a million parameters) the step had been a quarter of the training time. `parameters` may
    be parameter groups (dicts holding "params")."""
    parameters = [p for item in parameters for p in (item["params"] if isinstance(item, dict) else [item])]
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
    # each group's own (train.backbone_lr); a schedule rebuilt for a budget's plan keeps the first one's
    peaks = [group.get("max_lr", group["lr"]) for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total_steps)


def _by_step(optimizer, factor):
    """A schedule that multiplies train.lr by `factor(step)`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
