"""The depthwise separable block (MobileNet): one filter per channel, then a 1 x 1 mix of channels.

    - separable: {channels: 64, stride: 2}           # depthwise k x k, bn, act, pointwise, bn, act
    - separable: {channels: 32, expand: 6, se: true}  # MobileNetV2's inverted residual

Without `expand` it is MobileNet's block: a depthwise convolution (kernel 3 unless `kernel` says
otherwise, odd, padded to keep the size at stride 1) and a pointwise one, each followed by batch
norm and the activation. With `expand: N` it is the inverted residual: a 1 x 1 convolution widens
the input N times (none for N = 1), the depthwise one filters it, a 1 x 1 `project` narrows it to
`channels` with batch norm and no activation, and the input is added back when the shapes match
(stride 1, as many channels in as out). `se: true` gates the depthwise output (MobileNetV3).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnncli.errors import CnncliError
from cnncli.nn.blocks.kinds import BlockKind
from cnncli.nn.blocks.options import activation, positive_int, size_pair
from cnncli.nn.blocks.residual import Residual, add_conv_norm, channels_and_stride, strided_size
from cnncli.nn.blocks.squeeze import SE_OPTIONS, squeeze_excite


def build_separable(options: dict, shape: tuple[int, ...], where: str) -> tuple[nn.Module, tuple[int, ...]]:
    key, channels, stride = channels_and_stride("separable", options, shape, where)
    in_channels = shape[0]
    kernel = size_pair(options.get("kernel", 3), f"{key}.kernel")
    if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
        raise CnncliError(f"{key}.kernel: expected odd sizes (padded by half to keep the size), got {kernel}")
    act_name = options.get("activation", "relu")
    expand = options.get("expand")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    inner = in_channels
    if expand is not None:
        inner = in_channels * positive_int(expand, f"{key}.expand")
        if inner != in_channels:
            add_conv_norm(layers, ("expand", "bn0", "act0"), in_channels, inner, 1,
                          act=activation(act_name, f"{key}.activation"))
    add_conv_norm(layers, ("depthwise", "bn1", "act1"), inner, inner, kernel, stride, groups=inner,
                  act=activation(act_name, f"{key}.activation"))
    gate = squeeze_excite(options, inner, key)
    if gate is not None:
        layers["se"] = gate
    out = (channels, *strided_size(shape, stride))
    if expand is None:
        add_conv_norm(layers, ("pointwise", "bn2", "act2"), inner, channels, 1,
                      act=activation(act_name, f"{key}.activation"))
        return nn.Sequential(layers), out
    add_conv_norm(layers, ("project", "bn2", ""), inner, channels, 1)
    if stride == (1, 1) and in_channels == channels:
        return Residual(layers), out
    return nn.Sequential(layers), out


SEPARABLE = BlockKind(build_separable, ("channels", "kernel", "stride", "expand", "activation", *SE_OPTIONS),
                      prefix="sep")
