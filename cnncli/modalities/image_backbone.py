"""`model.blocks: auto` for images: the network a general recipe trains, sized to the pictures.

Two families, both measured on CIFAR-10 (docs/BENCHMARKS.md, "Photos in one command"):

- conv groups (`conv_group_shapes`, what auto gives): airbench's network (Jordan 2024) made to
  fit any input: a whiten block (fixed filters measured on the training images) and three
  groups of two 3 x 3 convolutions, the first max-pooled, each with batch norm and GELU, widths
  w, 4w, 4w; a global max pool. For larger photos the whiten block strides (2 x 2 or 4 x 4
  patches) and a fourth group follows when the maps are still 48 pixels or more. The base width
  w follows the number of training images, and with a time budget the widest that trains enough
  epochs in it is taken (cnncli.training.budget). Per minute of a 2-core CPU it is far more
  accurate than the residual nets: the heavy convolutions run on pooled maps.
- residual nets (`backbone_shapes`): He et al.'s CIFAR ResNets (ResNet-8, -14, -20), kept for
  recipes that name their blocks and for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# (training images below which, base width w of the conv groups)
WIDTH_BY_IMAGES = ((5_000, 32), (25_000, 48), (math.inf, 64))
NARROWER_WIDTHS = (48, 32, 24, 16)  # what a time budget may take instead, widest first
GROUP_GROWTH = 4  # the second and later groups are this many times wider than the first
# (training images below which, residual blocks per stage): ResNet-8, -14, -20 (He et al.'s CIFAR nets).
DEPTH_BY_IMAGES = ((5_000, 1), (25_000, 2), (math.inf, 3))


def stem_stride(side: int) -> int:
    """Large photos start with a strided stem, so that the stages see maps of 24 to 56 pixels."""
    return 1 if side <= 64 else 2 if side <= 128 else 4


def stage_count(side: int) -> int:
    """Three stages, and a fourth when the stem leaves maps of 48 pixels or more."""
    return 3 if side // stem_stride(side) < 48 else 4


@dataclass(frozen=True)
class ConvGroupShape:
    """The conv-group net for one input size and width."""

    whiten_stride: int  # 1: 2 x 2 patches overlapping; 2 or 4: patches of that side, side by side
    groups: int
    width: int  # channels of the first group; the others have GROUP_GROWTH times as many

    @property
    def stride(self) -> int:
        """What the input's sides must divide by (each group's pool floors what is left over)."""
        return self.whiten_stride

    @property
    def whiten_kernel(self) -> int:
        """The side of the patches the whiten block whitens: 2, or its stride when larger."""
        return max(2, self.whiten_stride)

    @property
    def smallest_side(self) -> int:
        """The smallest input side (a multiple of `stride`) whose maps last through every pool."""
        needed = self.whiten_stride * 2 ** self.groups + self.whiten_kernel - 1
        return self.stride * math.ceil(needed / self.stride)

    @property
    def widths(self) -> list[int]:
        return [self.width] + [self.width * GROUP_GROWTH] * (self.groups - 1)


def conv_group_shapes(side: int, images: int) -> list[ConvGroupShape]:
    """The conv-group nets for inputs whose longer side is `side` pixels: the one for `images`
    training images first, then the narrower ones a time budget may need."""
    width = next(width for below, width in WIDTH_BY_IMAGES if images < below)
    stride = stem_stride(side)
    return [ConvGroupShape(stride, stage_count(side), each)
            for each in (width, *(narrower for narrower in NARROWER_WIDTHS if narrower < width))]


def conv_group_backbone(shape: ConvGroupShape) -> list[dict]:
    """Block specs: whiten, the groups (conv with max pool, conv; batch norm and GELU after each),
    a global max pool."""
    blocks: list[dict] = [{"whiten": {"kernel": shape.whiten_kernel, "stride": shape.whiten_stride}}]
    for width in shape.widths:
        common = {"channels": width, "kernel": 3, "padding": "same", "batch_norm": True, "activation": "gelu"}
        blocks += [{"conv": {**common, "pool": 2}}, {"conv": common}]
    blocks.append({"pool": {"type": "max", "size": "global"}})
    return blocks


def describe_conv_groups(shape: ConvGroupShape, images: int, size: list[int]) -> str:
    return (f"model.blocks auto: {shape.groups} conv groups of {', '.join(map(str, shape.widths))} channels after "
            f"a whiten block ({shape.whiten_kernel} x {shape.whiten_kernel} patches, stride "
            f"{shape.whiten_stride}) for {images:,} training images of {size[0]} x {size[1]}")


def auto_backbones(size: list[int], images: int) -> list[tuple[list, str]]:
    """model.blocks: auto's candidates for inputs of `size` and `images` training images, each
    with the line that says what it is: the data's own first, then narrower ones."""
    return [(conv_group_backbone(shape), describe_conv_groups(shape, images, size))
            for shape in conv_group_shapes(max(size), images)]


def size_rule(side: int) -> tuple[int, int]:
    """(the multiple data.image.size: auto rounds sides to, the smallest side it gives) for
    inputs whose longer side is `side`: what the auto backbone needs."""
    shape = conv_group_shapes(side, 0)[0]
    return shape.stride, shape.smallest_side


@dataclass(frozen=True)
class BackboneShape:
    """The residual net for one input size and data set size."""

    stem_stride: int  # 1 (small pictures), 2, or 4 (a strided convolution and a max pool: large photos)
    stages: int  # each doubles the width; every stage after the first halves the picture
    blocks_per_stage: int
    width: int  # channels of the stem and the first stage

    @property
    def stride(self) -> int:
        """How much smaller the last stage's maps are than the input: what the size must divide by."""
        return self.stem_stride * 2 ** (self.stages - 1)

    @property
    def depth(self) -> int:
        """Weighted layers, counted as in ResNet-20: the stem, two per block, the classifier."""
        return 2 + 2 * self.stages * self.blocks_per_stage


def backbone_shapes(side: int, images: int) -> list[BackboneShape]:
    """The rule of `model.blocks: auto` for inputs whose longer side is `side` pixels: the net for
    `images` training images first, then the shallower ones (for a time budget too short for it).
    The first stage is 16 channels wide on small pictures, as in He et al.'s CIFAR nets, and 32
    after a strided stem."""
    depth = next(blocks for below, blocks in DEPTH_BY_IMAGES if images < below)
    stride = stem_stride(side)
    return [BackboneShape(stride, stage_count(side), blocks, 16 if stride == 1 else 32)
            for blocks in range(depth, 0, -1)]


def residual_backbone(shape: BackboneShape) -> list[dict]:
    """Block specs: the stem (3 x 3 convolution, batch norm, ReLU; and a max pool at stride 4),
    the residual stages, a global average pool."""
    stride = min(shape.stem_stride, 2)
    blocks: list[dict] = [{"conv": {"channels": shape.width, "kernel": 3, "stride": stride, "padding": 1,
                                    "batch_norm": True}}]
    if shape.stem_stride == 4:
        blocks.append({"pool": {"type": "max", "size": 2}})
    for stage in range(shape.stages):
        for block in range(shape.blocks_per_stage):
            step = 2 if stage and not block else 1
            blocks.append({"residual": {"channels": shape.width * 2 ** stage, "stride": step}})
    blocks.append({"pool": {"type": "avg", "size": "global"}})
    return blocks


def describe_backbone(shape: BackboneShape, images: int, size: list[int]) -> str:
    widths = ", ".join(str(shape.width * 2 ** stage) for stage in range(shape.stages))
    return (f"model.blocks auto: ResNet-{shape.depth} ({shape.stages} stages of {shape.blocks_per_stage} residual "
            f"block(s), {widths} channels, stem stride {shape.stem_stride}) for {images:,} training images of "
            f"{size[0]} x {size[1]}")
