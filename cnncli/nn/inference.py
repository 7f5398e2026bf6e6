"""The network as prediction runs it: folded, laid out for the CPU, batched by the modality.

`for_inference` returns a copy of a trained network that computes the same outputs (up to float
rounding, about 1e-7) faster: each batch norm is folded into the convolution or linear layer
before it (one pass over the activations instead of three; inside a residual block along its
main path and its shortcut, never across the sum), ReLUs overwrite the fresh results
they read instead of allocating new ones, and on the CPU the 2-d convolutions use the
channels-last layout, oneDNN's fast path (about twice as fast on 28x28 digits and 40-band
spectrograms, measured one thread at a time), and a global max pool is one `amax` (the same
values, about three times as fast as AdaptiveMaxPool2d on Kim's text maps; training keeps the
pool, whose gradient goes to one maximum where amax would share it among ties), and a max pool
whose windows tile the map is elementwise maxima of strided views (max_pool2d on the CPU also
records where each maximum was; three times the cost), and a full-width convolution (Kim's filters
over a sentence) is one matrix product (RowProduct). Last, what does nothing in evaluation goes
(dropout, identities, sequences of one), sequences inside sequences become one, and a RowProduct
followed by ReLU and a global max takes the maximum first (ReLU commutes with it) in one module:
a text network of 29 module calls becomes one of 11. A stem may offer to run together with its
backbone (`fused_with`): Kim's text network then runs its sentences end to end, without the
padding of a batch's shorter ones (the text modality's packed.py). The copy is only ever run,
never trained.

`network_outputs` runs it without autograd bookkeeping (torch.inference_mode) over batches the
modality cuts (text groups sentences of similar length and drops the padding no filter reaches).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from cnncli.nn.blocks import FullWidthConv2d, Residual
from cnncli.nn.calibration import scaled_probabilities
from cnncli.nn.layers import pair


def for_inference(network: nn.Module, device: torch.device) -> nn.Module:
    """A faster copy of `network` for prediction only (see the module's docstring)."""
    fast = copy.deepcopy(network).eval()
    for module in list(fast.modules()):
        if isinstance(module, nn.Sequential):
            _fold_batch_norms(module, list(module._modules))
        elif isinstance(module, Residual):  # its main path runs in order; the sum and act come after it
            _fold_batch_norms(module, list(module.main))
        for name, child in module.named_children():
            if isinstance(child, nn.AdaptiveMaxPool2d) and child.output_size in (1, (1, 1)) \
                    and not child.return_indices:
                module._modules[name] = GlobalMax()
            elif isinstance(child, nn.MaxPool2d) and _tiles(child):
                module._modules[name] = TiledMax(pair(child.kernel_size))
    fast.to(device)
    if device.type == "cpu":
        for module in list(fast.modules()):
            if type(module) is nn.Conv2d:
                module.to(memory_format=torch.channels_last)
            for name, child in module.named_children():
                if isinstance(child, FullWidthConv2d) and RowProduct.fits(child):
                    module._modules[name] = RowProduct(child)
    for name, child in list(fast.named_children()):  # the top module keeps its parts: its forward names them
        fast._modules[name] = _simplified(child)
    for module in list(fast.modules()):  # a stem that runs faster with its backbone (text: packed sentences)
        parts = module._modules
        fuse = getattr(parts.get("stem"), "fused_with", None)
        if callable(fuse) and "backbone" in parts and getattr(module, "views", None) is None:
            fused = fuse(parts["backbone"])
            if fused is not None:
                parts["stem"], parts["backbone"] = fused, nn.Identity()
    return fast


def _simplified(module: nn.Module) -> nn.Module:
    """`module` without what does nothing in evaluation, nested sequences flattened, and each
    RowProduct, ReLU, global max run as one RowProductMax (see the module's docstring)."""
    for name, child in list(module.named_children()):
        module._modules[name] = _simplified(child)
    if type(module) is not nn.Sequential:
        return module
    steps: list[tuple[str, nn.Module]] = []  # (name, step): an inner sequence's steps named outer_inner
    for name, child in module.named_children():
        inner = list(child.named_children()) if type(child) is nn.Sequential else [("", child)]
        steps += [(f"{name}_{part}" if part else name, step) for part, step in inner
                  if not isinstance(step, (nn.Identity, nn.modules.dropout._DropoutNd))]
    for index in range(len(steps) - 2, 0, -1):
        (name, product), (_, act), (_, pool) = steps[index - 1:index + 2]
        if type(product) is RowProduct and isinstance(act, nn.ReLU) and isinstance(pool, GlobalMax):
            steps[index - 1:index + 2] = [(name, RowProductMax(product))]
    return steps[0][1] if len(steps) == 1 else nn.Sequential(OrderedDict(steps)) if steps else nn.Identity()


class GlobalMax(nn.Module):
    """The largest value of each (N, C) map, shaped (N, C, 1, 1): AdaptiveMaxPool2d(1)'s output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3), keepdim=True)


class RowProduct(nn.Module):
    """A full-width convolution (`kernel: [h, full]`, Kim's filters over a sentence) that runs a
    batch as one matrix product: each window of `h` rows laid out as a row of a matrix (unfold),
    times the filters. The same values as conv1d, which runs it in training; but oneDNN's
    convolution sets itself up anew for each input shape it meets, and a server's batches (lengths
    cut to their longest sentence) change shape from one to the next. One thread, three of Kim's
    branches, shapes varying by up to 8 tokens: 32 x 40 tokens 3.4 ms a product against 4.1 a
    convolution, 128 x 30 12.3 against 12.6, 128 x 60 29 against 24. When the shape stays put
    (predict's length-sorted batches) the convolution wins sooner: 64 x 40 6.8 ms against 8.1.
    So the convolution runs batches over LARGE windows (sentences x places), and those over SMALL
    that have the shape of the call before; the product the rest."""

    SMALL, LARGE = 1024, 4096  # windows in a batch

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        out_channels, channels, height, width = conv.weight.shape
        self.height, self.stride, self.padding = height, conv.stride[0], conv.padding[0]
        # (h * C * W, out): window row t, channel c, column w at t*C*W + c*W + w, as the unfolded rows lay them
        self.register_buffer("filters", conv.weight.detach().permute(2, 1, 3, 0).reshape(-1, out_channels).clone())
        # (out, C * W, h): the same filters for conv1d along the rows
        self.register_buffer("kernels", conv.weight.detach().permute(0, 1, 3, 2).reshape(out_channels, -1, height)
                             .clone())
        self.register_buffer("bias", conv.bias.detach().clone() if conv.bias is not None else None)
        self.last_shape: tuple[int, ...] = ()

    @staticmethod
    def fits(conv: nn.Conv2d) -> bool:
        return (conv.groups == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
                and isinstance(conv.padding, tuple) and conv.padding[1] == 0 and conv.stride[1] == 1)

    def rows(self, x: torch.Tensor) -> torch.Tensor | None:
        """The windows of `x` as the rows of one matrix (batch * places, h * C * W), or None when
        the convolution should run this batch (see the class docstring)."""
        batch, channels, height, width = x.shape
        places = (height + 2 * self.padding - self.height) // self.stride + 1
        repeated, self.last_shape = x.shape == self.last_shape, x.shape
        if batch * places > (self.SMALL if repeated else self.LARGE):
            return None
        rows = x.transpose(1, 2).reshape(batch, height, channels * width)
        if self.padding:
            rows = F.pad(rows, (0, 0, self.padding, self.padding))
        return rows.unfold(1, self.height, self.stride).transpose(2, 3).reshape(batch * places, -1)

    def times(self, matrix: torch.Tensor) -> torch.Tensor:
        """The windows' rows times the filters, plus the bias: (batch * places, out)."""
        return matrix @ self.filters if self.bias is None else torch.addmm(self.bias, matrix, self.filters)

    def convolved(self, x: torch.Tensor) -> torch.Tensor:
        """conv1d along the rows: (N, out, H', 1)."""
        batch, channels, height, width = x.shape
        rows = x.permute(0, 1, 3, 2).reshape(batch, channels * width, height)
        return F.conv1d(rows, self.kernels, self.bias, self.stride, self.padding).unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        matrix = self.rows(x)
        if matrix is None:
            return self.convolved(x)
        return self.times(matrix).view(x.shape[0], -1, self.filters.shape[1]).permute(0, 2, 1).unsqueeze(-1)


class RowProductMax(nn.Module):
    """RowProduct, ReLU, then the global max over the sentence, shaped (N, out, 1, 1): the maximum
    taken straight from the product's rows, ReLU on it alone (max(relu(x)) = relu(max(x)))."""

    def __init__(self, product: RowProduct):
        super().__init__()
        self.product = product

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        matrix = self.product.rows(x)
        if matrix is None:
            return self.product.convolved(x).amax(dim=2, keepdim=True).relu_()
        out = self.product.times(matrix).view(x.shape[0], -1, self.product.filters.shape[1])
        return out.amax(dim=1).relu_()[:, :, None, None]


def _tiles(pool: nn.MaxPool2d) -> bool:
    """Whether the pool's windows tile its input: stride = kernel, no padding, dilation or ceil."""
    return (pair(pool.stride) == pair(pool.kernel_size) and pair(pool.padding) == (0, 0)
            and pair(pool.dilation) == (1, 1) and not pool.ceil_mode and not pool.return_indices)


class TiledMax(nn.Module):
    """MaxPool2d with stride = kernel: the elementwise largest of the kernel's strided views, one
    axis at a time (for 2 x 2, two `maximum` calls). The same values as max_pool2d, which on the CPU
    also works out where each maximum was: three times as fast on FSDD's maps."""

    def __init__(self, kernel: tuple[int, int]):
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        high, wide = self.kernel
        x = x[..., :x.shape[-2] // high * high, :x.shape[-1] // wide * wide]
        rows = x[..., 0::high, :]
        for offset in range(1, high):
            rows = torch.maximum(rows, x[..., offset::high, :])
        out = rows[..., 0::wide]
        for offset in range(1, wide):
            out = torch.maximum(out, rows[..., offset::wide])
        return out


def _fold_batch_norms(sequence: nn.Module, names: list[str]) -> None:
    """Fold each batch norm into the convolution or linear layer right before it, and let a ReLU
    that reads a fresh result of such a layer overwrite it (no new tensor per call); `names` are
    children of `sequence` that run one after the other, each reading the one before."""
    for first, second in zip(names, names[1:]):
        layer, norm = sequence._modules[first], sequence._modules[second]
        if not isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)) or norm.running_mean is None:
            continue
        if isinstance(layer, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
            sequence._modules[first] = fuse_conv_bn_eval(layer, norm)
        elif isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
            sequence._modules[first] = fuse_linear_bn_eval(layer, norm)
        else:
            continue
        sequence._modules[second] = nn.Identity()
    fresh = False  # whether the tensor flowing here was made by the module before (nobody else holds it)
    for module in (sequence._modules[name] for name in names):
        if isinstance(module, nn.ReLU) and fresh:
            module.inplace = True
        elif not isinstance(module, nn.Identity):
            fresh = isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d))


def network_outputs(network: nn.Module, modality: Any, encoded: torch.Tensor, batch_size: int,
                    device: torch.device) -> torch.Tensor:
    """Raw outputs (logits; an ensemble's log averaged probabilities) for encoded rows, in their
    order, on the CPU."""
    outputs: torch.Tensor | None = None
    with torch.inference_mode():
        for positions, batch in modality.inference_batches(encoded, batch_size):
            result = network(batch.to(device)).float().cpu()
            if outputs is None:
                outputs = torch.empty((len(encoded), result.shape[1]))
            outputs[positions] = result
    return outputs if outputs is not None else torch.empty((0, 0))


def probabilities(network: nn.Module, modality: Any, encoded: torch.Tensor, batch_size: int,
                  device: torch.device, temperature: float = 1.0) -> torch.Tensor:
    """Class probabilities softmax(outputs / temperature) for encoded rows, in their order."""
    return scaled_probabilities(network_outputs(network, modality, encoded, batch_size, device), temperature)
