"""Layers set from the training data before the first step (the whiten block's filters).

A layer that wants this has a `fit_to_data(inputs)` method, given a batch of what it reads: a
forward pass of training rows through the network, in eval mode and without gradients, stops at
each such layer on the way, and goes no further once all have been met. The rows are a seeded
sample of the training split, not its first rows, which a folder of class folders lists one class
at a time.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class _Fitted(Exception):
    """Every layer to fit has fitted: the rest of the forward pass would be wasted."""


SAMPLE_ROWS = 2048  # training rows the layers are fitted on (a 32 x 32 picture has 961 2 x 2 patches)


def data_fitted_layers(network: nn.Module) -> list[nn.Module]:
    return [module for module in network.modules() if callable(getattr(module, "fit_to_data", None))]


@torch.no_grad()
def fit_layers_to_data(network: nn.Module, data, device: torch.device, seed: int) -> bool:
    """Fit the layers of `network` that are set from data (cnncli.nn.blocks.whiten) on a sample of
    `data` (TensorData, Rows of it or streamed files); whether there were any. Layers already
    fitted (weights from a bundle or `model.init`) keep theirs."""
    layers = data_fitted_layers(network)
    if not layers or not len(data):
        return bool(layers)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(data), generator=generator)[:SAMPLE_ROWS].sort().values
    met: set[int] = set()

    def fit(module: nn.Module, args: tuple) -> None:
        module.fit_to_data(args[0])
        met.add(id(module))
        if len(met) == len(layers):
            raise _Fitted

    hooks = [layer.register_forward_pre_hook(fit) for layer in layers]
    training = network.training
    network.eval()
    try:
        for inputs, _ in data.batches([rows], device, skip_unreadable=True):
            with contextlib.suppress(_Fitted):
                network(inputs)
    finally:
        for hook in hooks:
            hook.remove()
        network.train(training)
    return True
