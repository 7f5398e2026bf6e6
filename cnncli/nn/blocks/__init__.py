"""Backbone blocks from recipe specs: conv, pool, dropout, flatten, linear, parallel, residual, separable,
whiten.

A recipe's `model.blocks` is a list; each item names one block kind and its options:

    - conv:    {channels: 24, kernel: 6, stride: 1, padding: same, batch_norm: true}
    - conv:    {channels: 64, padding: same, pool: 2, batch_norm: true, activation: gelu}  # pooled before the norm
    - whiten:  {kernel: 2}                       # fixed filters measured on the training images
    - pool:    {type: max, size: 2}               # size: int, [h, w] or global
    - dropout: 0.5
    - flatten: {}
    - linear:  {features: 200, batch_norm: true, dropout: 0.5}
    - parallel:                                    # branches read the same input; outputs concatenated
        - [{conv: {channels: 100, kernel: [3, full]}}, {pool: {type: max, size: global}}]
        - [{conv: {channels: 100, kernel: [4, full]}}, {pool: {type: max, size: global}}]
    - residual: {channels: 64, stride: 2}          # bottleneck: true for 1-3-1; se: true
    - separable: {channels: 64, stride: 2}         # depthwise + pointwise; expand: 6 inverted residual

`kernel: [h, full]` spans the whole input width (text: the embedding dimension). Padding `same`
follows TensorFlow's rule, so the lecture's networks are reproduced exactly. The classifier
(flatten + linear to the number of classes) is appended for you. Block names (`conv1`, `pool1`,
`fc1`, `parallel1.branch0.conv1`, `res1`, `res1.conv1`, `sep1`) address layers for inspect and
feature maps, and name the weights in bundles. `se: true` on conv, residual and separable blocks
adds a squeeze-and-excitation gate (squeeze).

Each kind is one BlockKind entry in BLOCKS (cnncli.nn.blocks.kinds): its option names and how it
builds; its parameters, shapes and connections are read off what it builds. The built-in kinds
live in spatial (conv, pool), dense (dropout, flatten, linear), parallel, residual, separable
(squeeze holds their gate) and whiten; build turns specs into modules and sizes them on the meta device.
"""

from cnncli.nn.blocks.build import Size, build_blocks, estimate_blocks, output_shape, parse_block
from cnncli.nn.blocks.dense import DROPOUT, FLATTEN, LINEAR
from cnncli.nn.blocks.kinds import BLOCKS, BlockKind
from cnncli.nn.blocks.options import ACTIVATIONS
from cnncli.nn.blocks.parallel import PARALLEL, Parallel
from cnncli.nn.blocks.residual import RESIDUAL, Residual
from cnncli.nn.blocks.separable import SEPARABLE
from cnncli.nn.blocks.spatial import CONV, POOL, FullWidthConv2d
from cnncli.nn.blocks.squeeze import SqueezeExcite
from cnncli.nn.blocks.whiten import WHITEN, PatchWhitening

for _name, _kind in (("conv", CONV), ("pool", POOL), ("dropout", DROPOUT), ("flatten", FLATTEN),
                     ("linear", LINEAR), ("parallel", PARALLEL), ("residual", RESIDUAL), ("separable", SEPARABLE),
                     ("whiten", WHITEN)):
    BLOCKS.register(_name, _kind)

__all__ = ["ACTIVATIONS", "BLOCKS", "BlockKind", "FullWidthConv2d", "Parallel", "PatchWhitening", "Residual", "Size",
           "SqueezeExcite", "build_blocks", "estimate_blocks", "output_shape", "parse_block"]
