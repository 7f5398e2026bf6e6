"""The shared network: a modality's stem, a backbone built from block specs, a classifier.

The backbone's blocks (conv, pool, dropout, flatten, linear, parallel) and their options are
described in cnncli.nn.blocks; a recipe may name a timm architecture instead (`model.backbone`,
cnncli.nn.backbones), which replaces the blocks. An ensemble is several such networks whose probabilities are
averaged. `padding_margin` works out how much padding a text batch really needs.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, NamedTuple

import torch
from torch import nn

from cnncli.errors import CnncliError
from cnncli.limits import MAX_ACTIVATIONS, MAX_BATCH_ACTIVATIONS, MAX_INPUT_VALUES, MAX_PARAMETERS
from cnncli.nn.backbones import backbone_size, build_backbone
from cnncli.nn.blocks import ACTIVATIONS, Parallel, Size, build_blocks, estimate_blocks, output_shape


class Mix(NamedTuple):
    """mixup's draw for one training batch: row i becomes weight * row i + (1 - weight) * row order[i]."""

    order: torch.Tensor
    weight: float


class Network(nn.Module):
    """stem -> backbone (named blocks) -> classifier. The same class serves every modality.

    `input_dtype` is the type of the encoded samples the stem reads (uint8 pixels, int64 token
    ids, float spectrograms); `trims_batches` says the stem cuts training batches to the rows the
    backbone needs, so the work per sample varies (see Modality.adapt_stem). With a `mix` (training
    with mixup) the batch is blended after the stem: on the picture every modality makes (scaled
    pixels, a normalised spectrogram, token embeddings), so one mixup serves images, sound and text."""

    def __init__(self, stem: nn.Module, backbone: nn.Sequential, classifier: nn.Sequential,
                 input_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.stem = stem
        self.backbone = backbone
        self.classifier = classifier
        self.input_dtype = input_dtype
        self.trims_batches = False
        self.views: nn.Module | None = None  # Modality.test_views: averaged over in eval mode

    def forward(self, x: torch.Tensor, mix: Mix | None = None) -> torch.Tensor:
        x = self.stem(x)
        if mix is not None:
            x = mix.weight * x + (1 - mix.weight) * x[mix.order]
        if self.views is not None and not self.training:
            return self.views(x, self.head)
        return self.head(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone and classifier: the stem's output to class scores."""
        return self.classifier(self.backbone(x))


class Ensemble(nn.Module):
    """Networks of the same recipe trained apart from different seeds. The prediction is their
    average class probability, returned as its log so that softmax, argmax and cross-entropy
    downstream treat the ensemble as one network. Inspection sees the first member's layers."""

    def __init__(self, members: list[Network]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([member(x).softmax(dim=1) for member in self.members]).mean(dim=0)
        return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()

    @property
    def stem(self) -> nn.Module:
        return self.members[0].stem

    @property
    def backbone(self) -> nn.Sequential:
        return self.members[0].backbone

    @property
    def classifier(self) -> nn.Sequential:
        return self.members[0].classifier

    @property
    def input_dtype(self) -> torch.dtype:
        return self.members[0].input_dtype


def member_seed(seed: int, member: int) -> int:
    """Member i of an ensemble trains from seed + 1000 i: member 0 is the single network of that
    seed, and the ensembles of seeds 0, 1, 2 share no member."""
    return seed + 1000 * member


def members_of(network: nn.Module) -> list[nn.Module]:
    return list(network.members) if isinstance(network, Ensemble) else [network]

def build_network(model: Any, stem: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                  input_dtype: torch.dtype = torch.float32) -> Network:
    """Build the whole network for encoded inputs of `input_shape` (one sample, no batch axis).
    `model`: the recipe's model section, or only its list of blocks."""
    blocks, backbone_name, options = architecture(model)
    stem_shape = output_shape(stem, input_shape, dtype=input_dtype)
    if backbone_name:
        backbone, shape = build_backbone(backbone_name, options, stem_shape)
    else:
        backbone, shape = build_blocks(blocks, stem_shape, "model.blocks")
    return Network(stem, backbone, classifier_for(shape, num_classes), input_dtype)


def architecture(model: Any) -> tuple[list[Any], str | None, dict]:
    """(blocks, timm backbone name or None, its options) of a recipe's model section or a list of blocks."""
    if isinstance(model, list):
        return model, None, {}
    return model.blocks, model.backbone, dict(model.backbone_options)


def classifier_for(shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """The layer appended to every backbone: its output, flattened, to one score per class."""
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), linear=nn.Linear(math.prod(shape), num_classes)))


def network_for(modality: Any, model: Any, num_classes: int) -> Network:
    """A fresh network for a fitted modality: its stem, the recipe's backbone, a classifier.
    `model`: the recipe's model section, or only its list of blocks."""
    stem = modality.build_stem()
    network = build_network(model, stem, modality.input_shape, num_classes, modality.input_dtype)
    network.trims_batches = modality.adapt_stem(stem, network.backbone)
    network.views = modality.test_views()
    return network

def check_network_size(modality: Any, model: Any, num_classes: int, batch_size: int = 1,
                       members: int = 1) -> None:
    """Refuse a network larger than cnncli.limits allows, from the block specs (or the named
    backbone) and the modality's stem alone, before any weight is allocated: a recipe asking for
    a billion channels, or a bundle claiming a huge input, costs one line instead of the
    machine's memory. `model`: the recipe's model section, or only its list of blocks."""
    shape = tuple(modality.input_shape)
    values = math.prod(shape)
    if values > MAX_INPUT_VALUES:
        raise CnncliError(f"data.{modality.name}: one encoded sample of shape {list(shape)} holds {values:,} "
                          f"values; at most {MAX_INPUT_VALUES:,} are allowed")
    size = network_size(modality, model, num_classes)
    parameters, activations = size.parameters * members, size.values
    key = "model.backbone" if architecture(model)[1] else "model.blocks"
    if parameters > MAX_PARAMETERS:
        networks = f" ({members} networks)" if members > 1 else ""
        raise CnncliError(f"{key}: the network{networks} would have {parameters:,} parameters; at most "
                          f"{MAX_PARAMETERS:,} are allowed")
    if activations > MAX_ACTIVATIONS or activations * batch_size > MAX_BATCH_ACTIVATIONS:
        raise CnncliError(f"{key}: the layers would output {activations:,} values per sample "
                          f"({activations * batch_size:,} per batch of {batch_size}); at most {MAX_ACTIVATIONS:,} "
                          f"per sample and {MAX_BATCH_ACTIVATIONS:,} per batch are allowed")


def network_size(modality: Any, model: Any, num_classes: int) -> Size:
    """The Size of the network `network_for` builds: its stem as the modality reports it, its
    backbone and classifier built on the meta device (shapes without storage)."""
    stem_shape, stem_parameters = modality.stem_size()
    blocks, backbone_name, options = architecture(model)
    if backbone_name:
        backbone = backbone_size(backbone_name, options, tuple(stem_shape))
    else:
        backbone = estimate_blocks(blocks, tuple(stem_shape), "model.blocks")
    with torch.device("meta"):
        classifier = classifier_for(backbone.shape, num_classes)
    parameters = stem_parameters + backbone.parameters + sum(p.numel() for p in classifier.parameters())
    return Size((num_classes,), parameters, math.prod(stem_shape) + backbone.values + num_classes)


def padding_margin(backbone: nn.Module) -> int | None:
    """How many all-padding rows past the longest input a training batch needs for the backbone
    to compute exactly what it computes on the full padded height; None when its output depends
    on that height.

    Padding rows enter as zeros (the padding embedding). Zero rows stay zero through dropout and
    activations; a valid, stride-1 convolution of height k turns them into identical rows, one
    fewer per k - 1; a global max pool over rows that include one such window then sees every
    value it saw before. So a chain of convolutions ending in a global max pool (Kim's CNN, or
    parallel branches of them) needs 1 + sum(k - 1) rows; anything else (batch norm, other pools,
    flatten) keeps the full height. A first convolution may pad rows (Kim pads k - 1 before a
    sentence): its zeros are like the padding's."""
    margin = _chain_margin(list(_leaves(backbone)), zero_rows=True)
    return margin[0] if margin is not None and margin[1] else None


def _leaves(module: nn.Module):
    for child in module.children() if isinstance(module, nn.Sequential) else [module]:
        yield from _leaves(child) if isinstance(child, nn.Sequential) else [child]


def _chain_margin(modules: list[nn.Module], zero_rows: bool) -> tuple[int, bool] | None:
    """(rows needed, whether the chain ended in a global max pool) for modules run in order."""
    margin = 1
    for module in modules:
        if isinstance(module, nn.BatchNorm2d) or (isinstance(module, nn.Dropout) and not zero_rows):
            return None  # batch statistics, or random draws, over the rows that would be dropped
        if isinstance(module, nn.Conv2d):
            if (module.stride[0], module.dilation[0]) != (1, 1) or (module.padding[0] and not zero_rows):
                return None  # padding zero rows onto zero rows is harmless; onto others it is not
            margin += module.kernel_size[0] - 1
            zero_rows = False
        elif isinstance(module, nn.AdaptiveMaxPool2d) and module.output_size in (1, (1, 1)):
            return margin, True
        elif isinstance(module, Parallel):
            branches = [_chain_margin(list(_leaves(branch)), zero_rows) for branch in module.branches]
            if any(branch is None or not branch[1] for branch in branches):
                return None
            return margin - 1 + max(branch[0] for branch in branches), True
        elif isinstance(module, tuple(ACTIVATIONS.values())):
            zero_rows = zero_rows and isinstance(module, (nn.ReLU, nn.Identity))
        elif not isinstance(module, nn.Dropout):
            return None
    return margin, False
