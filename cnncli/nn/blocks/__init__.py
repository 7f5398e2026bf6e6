"""Backbone blocks from recipe specs: conv, pool, dropout, flatten, linear, parallel.

A recipe's `model.blocks` is a list; each item names one block kind and its options:

    - conv:    {channels: 24, kernel: 6, stride: 1, padding: same, batch_norm: true}
    - pool:    {type: max, size: 2}               # size: int, [h, w] or global
    - dropout: 0.5
    - flatten: {}
    - linear:  {features: 200, batch_norm: true, dropout: 0.5}
    - parallel:                                    # branches read the same input; outputs concatenated
        - [{conv: {channels: 100, kernel: [3, full]}}, {pool: {type: max, size: global}}]
        - [{conv: {channels: 100, kernel: [4, full]}}, {pool: {type: max, size: global}}]

`kernel: [h, full]` spans the whole input width (text: the embedding dimension). Padding `same`
follows TensorFlow's rule, so the lecture's networks are reproduced exactly. The classifier
(flatten + linear to the number of classes) is appended for you. Block names (`conv1`, `pool1`,
`fc1`, `parallel1.branch0.conv1`) address layers for inspect and feature maps, and name the
weights in bundles.

Each kind is one BlockKind entry in BLOCKS (cnncli.nn.blocks.kinds): its option names and how it
builds; its parameters, shapes and connections are read off what it builds. The built-in kinds
live in spatial (conv, pool), dense (dropout, flatten, linear) and parallel; build turns specs
into modules and sizes them on the meta device.
"""

from cnncli.nn.blocks.build import Size, build_blocks, estimate_blocks, output_shape, parse_block
from cnncli.nn.blocks.dense import DROPOUT, FLATTEN, LINEAR
from cnncli.nn.blocks.kinds import BLOCKS, BlockKind
from cnncli.nn.blocks.options import ACTIVATIONS
from cnncli.nn.blocks.parallel import PARALLEL, Parallel
from cnncli.nn.blocks.spatial import CONV, POOL, FullWidthConv2d

for _name, _kind in (("conv", CONV), ("pool", POOL), ("dropout", DROPOUT), ("flatten", FLATTEN),
                     ("linear", LINEAR), ("parallel", PARALLEL)):
    BLOCKS.register(_name, _kind)

__all__ = ["ACTIVATIONS", "BLOCKS", "BlockKind", "FullWidthConv2d", "Parallel", "Size", "build_blocks",
           "estimate_blocks", "output_shape", "parse_block"]
