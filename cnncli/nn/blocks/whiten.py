"""The whitening block: a first layer that is not learnt but measured on the training images.

    - whiten: {kernel: 2}            # 2 x 2 patches; stride: 2 halves the picture as it goes
    - whiten: {kernel: 2, floor: 0.005}   # the eigenvalue floor, a share of the mean eigenvalue

Neighbouring pixels and colour channels are strongly correlated, so a first convolution spends
its early steps learning to decorrelate them. This block does it at once (airbench, Jordan 2024):
before training, the patches of `kernel` x `kernel` pixels of a few thousand training images are
gathered and their covariance's eigenvectors, each scaled by one over the square root of its
eigenvalue (plus a floor: `floor` times the mean eigenvalue, EIGENVALUE_FLOOR unless given),
become the filters, and their negatives, so that the GELU after them keeps both signs: no output
channel is then correlated with another, and the strong ones have unit variance. The filters stay
fixed (the bias learns); they are weights like any other, stored in the bundle, so a bundle
predicts with the whitening its training measured.
`fit_to_data` runs once per network (cnncli.nn.data_init), never on weights loaded from a bundle
or `model.init`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnncli.errors import CnncliError
from cnncli.nn.blocks.kinds import BlockKind
from cnncli.nn.blocks.options import activation, positive_int
from cnncli.nn.blocks.spatial import check_maps

# added to each eigenvalue, as a share of their mean: the faintest directions (the finest
# patterns) are amplified at most about 3x, not 45x as with airbench's 5e-4. ZCA's usual 0.1
# (Coates & Ng 2011); at 5e-4 and at 0.01 a net trained with random erasing (a rectangle's sharp
# edges are such patterns) never left chance on CIFAR-10, at 0.1 it learnt as without erasing.
EIGENVALUE_FLOOR = 0.1


class PatchWhitening(nn.Conv2d):
    """A convolution whose filters are the whitening transform of its input's patches."""

    def __init__(self, in_channels: int, kernel: int, stride: int, floor: float = EIGENVALUE_FLOOR):
        super().__init__(in_channels, 2 * in_channels * kernel * kernel, kernel, stride=stride, bias=True)
        self.floor = floor
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
        mean = float(eigenvalues.clamp_min(0).mean())
        floor = self.floor * (mean if mean > 0 else 1.0)  # blank pictures: as if normalised
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + floor)[:, None]).flip(0)
        filters = filters.reshape(-1, self.in_channels, kernel, kernel).to(self.weight)
        self.weight.copy_(torch.cat([filters, -filters]))
        self.fitted.fill_(True)


def build_whiten(options: dict, shape: tuple[int, ...], where: str) -> tuple[nn.Module, tuple[int, ...]]:
    check_maps("whiten", shape, where, "; put the whiten block first")
    channels, height, width = shape
    kernel = positive_int(options.get("kernel", 2), f"{where}.whiten.kernel")
    stride = positive_int(options.get("stride", 1), f"{where}.whiten.stride")
    floor = options.get("floor", EIGENVALUE_FLOOR)
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 < floor <= 10:
        raise CnncliError(f"{where}.whiten.floor: expected a share of the mean eigenvalue in (0, 10], got {floor!r}")
    layer = PatchWhitening(channels, kernel, stride, float(floor))
    layers = OrderedDict(conv=layer, act=activation(options.get("activation", "gelu"), f"{where}.whiten.activation"))
    out = [(size - kernel) // stride + 1 for size in (height, width)]
    return nn.Sequential(layers), (layer.out_channels, *out)


WHITEN = BlockKind(build_whiten, ("kernel", "stride", "floor", "activation"))
