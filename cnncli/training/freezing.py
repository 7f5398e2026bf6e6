"""train.freeze_epochs: the first epochs train only the classifier (and the stem), then everything.

While frozen, the backbone's parameters take no gradient, so the optimiser leaves them alone
(weight decay included: it skips parameters without one), and its batch norm and dropout layers
stay in eval mode, so its running statistics stay those it started with. Whether an epoch is
frozen is a function of its number alone: a resumed run freezes exactly where an uninterrupted
one did. Under torchrun the DistributedDataParallel wrapper is made again whenever the set of
trained parameters changes, since it reduces the gradients of those that took one when it was made.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def hold_backbone(loop: Any, epoch: int) -> None:
    """Freeze or release the backbone of `loop`'s network for epoch `epoch` (1-based), once the
    network has been put in training mode (cnncli.training.engine.Loop)."""
    if not loop.settings.freeze_epochs:
        return
    frozen = epoch <= loop.settings.freeze_epochs
    backbone = loop.network.backbone
    changed = any(parameter.requires_grad == frozen for parameter in backbone.parameters())
    backbone.requires_grad_(not frozen)
    if frozen:
        backbone.eval()
    if changed and loop.cluster.distributed:
        loop.model = loop.cluster.parallel(loop.network, loop.device, loop.settings.sync_batch_norm)
        loop.model.train()
        if frozen:
            backbone.eval()


def release_backbone(network: nn.Module, settings: Any) -> None:
    """The backbone trainable again once a fit ends (Grad-CAM and later fits need its gradients)."""
    if settings.freeze_epochs:
        network.backbone.requires_grad_(True)
