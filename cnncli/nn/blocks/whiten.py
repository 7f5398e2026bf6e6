"""The whitening block: a first layer that is not learnt but measured on the training images.

    - whiten: {kernel: 2}            # 2 x 2 patches; stride: 2 halves the picture as it goes

Neighbouring pixels and colour channels are strongly correlated, so a first convolution spends
its early steps learning to decorrelate them. This block does it at once (airbench, Jordan 2024):
before training, the patches of `kernel` x `kernel` pixels of a few thousand training images are
gathered and their covariance's eigenvectors, each scaled by one over the square root of its
eigenvalue, become the filters (and their negatives, so that the GELU after them keeps both
signs): every output channel then has unit variance and none is correlated with another. The
filters stay fixed (the bias learns); they are weights like any other, stored in the bundle, so a
bundle predicts with the whitening its training measured. `fit_to_data` runs once per network
(cnncli.nn.data_init), never on weights loaded from a bundle or `model.init`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnncli.nn.blocks.kinds import BlockKind
from cnncli.nn.blocks.options import activation, positive_int
from cnncli.nn.blocks.spatial import check_maps

EIGENVALUE_FLOOR = 5e-4  # added to each eigenvalue: directions with no variance are not blown up to noise


class PatchWhitening(nn.Conv2d):
    """A convolution whose filters are the whitening transform of its input's patches."""

    def __init__(self, in_channels: int, kernel: int, stride: int):
        super().__init__(in_channels, 2 * in_channels * kernel * kernel, kernel, stride=stride, bias=True)
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit_to_data(self, inputs: torch.Tensor) -> None:
        """Set the filters from `inputs` (a batch of what this layer reads), once."""
        if bool(self.fitted):
            return
        kernel, stride = self.kernel_size[0], self.stride[0]
        patches = inputs.float().unfold(2, kernel, stride).unfold(3, kernel, stride)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, self.in_channels * kernel * kernel).double()
        covariance = patches.T @ patches / max(len(patches), 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + EIGENVALUE_FLOOR)[:, None]).flip(0)
        filters = filters.reshape(-1, self.in_channels, kernel, kernel).to(self.weight)
        self.weight.copy_(torch.cat([filters, -filters]))
        self.fitted.fill_(True)


def build_whiten(options: dict, shape: tuple[int, ...], where: str) -> tuple[nn.Module, tuple[int, ...]]:
    check_maps("whiten", shape, where, "; put the whiten block first")
    channels, height, width = shape
    kernel = positive_int(options.get("kernel", 2), f"{where}.whiten.kernel")
    stride = positive_int(options.get("stride", 1), f"{where}.whiten.stride")
    layer = PatchWhitening(channels, kernel, stride)
    layers = OrderedDict(conv=layer, act=activation(options.get("activation", "gelu"), f"{where}.whiten.activation"))
    out = [(size - kernel) // stride + 1 for size in (height, width)]
    return nn.Sequential(layers), (layer.out_channels, *out)


WHITEN = BlockKind(build_whiten, ("kernel", "stride", "activation"))
