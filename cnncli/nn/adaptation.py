"""Test-time adaptation: batch norm's statistics measured again on the inputs about to be predicted.

Each batch norm layer normalises with the mean and variance of what it saw in training. A voice,
microphone, room or camera the network never met shifts those statistics, and every layer after
it sees inputs off the scale it learnt. Measuring them again on the new inputs, with no label
(AdaBN: Li et al. 2016, "Revisiting Batch Normalization For Practical Domain Adaptation"), puts
them back on that scale; the weights stay as trained.

It is asked for, never on by default: every score then depends on the set of inputs, not only on
its own, and the set should come from one source (one speaker's recordings, one camera's
pictures) large enough to measure it (tens of inputs at least).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from cnncli.errors import CnncliError

MAX_ADAPT_INPUTS = 2000  # the statistics of a source settle long before; predict reads no more for them
ADAPT_BATCH = 256  # inputs per measuring pass: eval and predict measure alike whatever their batch size


def batch_norms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [module for module in network.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def adapted_to(network: nn.Module, modality: Any, encoded: torch.Tensor, device) -> nn.Module:
    """A copy of `network` whose batch norm statistics are those of the `encoded` inputs (averaged
    over batches of ADAPT_BATCH); everything else, weights included, as it was. Each layer's
    statistics are measured as in training: on the batch, with the layers before it adapted."""
    adapted = copy.deepcopy(network).to(device)
    norms = batch_norms(adapted)
    if not norms:
        raise CnncliError("--adapt: this network has no batch norm layer whose statistics could be measured again")
    for norm in norms:
        norm.reset_running_stats()
        norm.train()
    seen = 0
    with torch.no_grad():
        for _, batch in modality.inference_batches(encoded, ADAPT_BATCH):
            if len(batch) < 2:  # one input has no variance to measure
                continue
            for norm in norms:  # a running average over the batches, each weighing as many inputs as it has
                norm.momentum = len(batch) / (seen + len(batch))
            adapted(batch.to(device))
            seen += len(batch)
    if seen == 0:
        raise CnncliError("--adapt: needs at least two readable inputs to measure their statistics")
    return adapted.eval()
