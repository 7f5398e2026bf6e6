"""Where a run's weights start: at random, from pretrained weights (model.pretrained,
cnncli.nn.pretrained), or from another bundle's network (model.init).

`model.init: runs/x` takes the bundle's architecture (its blocks, or its named backbone) into the
run's recipe, so that the bundle this run writes builds its own network without the one it
started from. The backbone's weights are copied (a first convolution made for another number of
input channels adapted); the stem's trainable weights too when the two runs encode their inputs
the same way (text: the same vocabulary, whose rows the embeddings are); the classifier is always
a new one, for this run's labels. Any modality may start from any other's bundle: a network of
photos can start one of spectrograms. The start is read once per run, and every network of the
run (ensemble members, augment: auto's candidates) starts from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnncli.bundle.io import Bundle, load_bundle
from cnncli.errors import CnncliError
from cnncli.nn.model import members_of, network_for
from cnncli.nn.pretrained import Pretrained, first_convolution, fit_tensors, load_pretrained, read_pretrained
from cnncli.runtime.progress import Progress


@dataclass
class Start:
    """The weights a run starts from (none: at random), and what its bundle records of them."""

    pretrained: Pretrained | None = None
    bundle: Bundle | None = None  # model.init's
    notes: list[str] = field(default_factory=list)

    @property
    def preprocessing(self) -> dict:
        """The mean, std and input size pretrained weights expect (empty when there are none)."""
        return self.pretrained.preprocessing if self.pretrained else {}

    def record(self) -> dict | None:
        """The bundle's `training.start`: where the weights came from and their sha256."""
        if self.pretrained:
            return self.pretrained.record()
        if self.bundle:
            return {"init": str(self.bundle.path), "sha256": self.bundle.weights_sha256,
                    "labels": self.bundle.labels, "modality": self.bundle.modality.name}
        return None

    def apply(self, network: nn.Module, modality: Any) -> list[str]:
        """Copy the start's weights into a freshly built network; lines saying what was copied and adapted."""
        if self.pretrained:
            notes = load_pretrained(network.backbone, self.pretrained)
            return [f"model.pretrained: {self.pretrained.origin} loaded into {network.backbone.name} "
                    f"(sha256 {self.pretrained.sha256[:12]}...)", *notes]
        if self.bundle:
            return copy_from_bundle(network, modality, self.bundle)
        return []


def read_start(config: Any, modality: Any, progress: Progress) -> tuple[Any, Start]:
    """The recipe with its network settled (model.init's architecture; a named backbone's blocks
    emptied) and the weights it starts from, read once; the unfitted `modality` takes the
    preprocessing pretrained weights expect (Modality.use_preprocessing)."""
    config, start = _settle(config)
    for note in start.notes + modality.use_preprocessing(start.preprocessing):
        progress.note(note)
    return config, start


def _settle(config: Any) -> tuple[Any, Start]:
    model = config.model
    if model.init:
        bundle = _load_init(model.init)
        theirs = bundle.config.model
        settled = dataclasses.replace(model, blocks=theirs.blocks, backbone=theirs.backbone,
                                      backbone_options=dict(theirs.backbone_options))
        notes = []
        if (model.blocks or model.backbone) and (model.blocks, model.backbone) != (theirs.blocks, theirs.backbone):
            notes.append(f"model.init: the network is {model.init}'s ({_architecture(theirs)}); the recipe's "
                         "model.blocks and model.backbone are not used")
        return dataclasses.replace(config, model=settled), Start(bundle=bundle, notes=notes)
    if model.backbone and model.blocks:
        config = dataclasses.replace(config, model=dataclasses.replace(model, blocks=[]))
        start = Start(notes=[f"model.backbone: {model.backbone} replaces model.blocks"])
    else:
        start = Start()
    if model.pretrained:
        start.pretrained = read_pretrained(model.pretrained, model.backbone)
    return config, start


def _load_init(path: str) -> Bundle:
    try:
        return load_bundle(Path(path).expanduser())
    except CnncliError as error:
        raise CnncliError(f"model.init: {error}") from None


def _architecture(model: Any) -> str:
    return f"model.backbone {model.backbone}" if model.backbone else f"{len(model.blocks)} blocks"


def copy_from_bundle(network: nn.Module, modality: Any, bundle: Bundle) -> list[str]:
    """model.init: the bundle's backbone (its first network's, for an ensemble), and its stem's
    weights when both runs encode inputs alike, into `network`; its classifier stays new."""
    source = members_of(bundle.network)[0]
    where = f"model.init: {bundle.path}"
    fitted, notes = fit_tensors(network.backbone.state_dict(), source.backbone.state_dict(), where,
                                first_convolution(network.backbone))
    network.backbone.load_state_dict(fitted, strict=False)
    copied = f"{len(fitted)} backbone tensors"
    stem = dict(network.stem.named_parameters())
    if stem and bundle.modality.name == modality.name and bundle.modality.state_dict() == modality.state_dict():
        theirs = dict(source.stem.named_parameters())
        if all(name in theirs and theirs[name].shape == tensor.shape for name, tensor in stem.items()):
            network.stem.load_state_dict({name: theirs[name] for name in stem}, strict=False)
            copied += f" and {len(stem)} of the stem"
    classes = network.classifier.linear.out_features
    return [f"model.init: started from {bundle.path} ({copied}); the classifier is new, for {classes} labels "
            f"(the bundle's had {len(bundle.labels)})", *[f"model.init: {note}" for note in notes]]


def fresh_network(modality: Any, config: Any, classes: int, start: Start, progress: Progress | None = None,
                  seed: int | None = None, device: torch.device | None = None) -> nn.Module:
    """A network of the run (the first, an ensemble member, a candidate of augment: auto) from its
    start; drawn from `seed` when given, and what was copied said to `progress` when given."""
    if seed is not None:
        torch.manual_seed(seed)
    network = network_for(modality, config.model, classes)
    for note in start.apply(network, modality):
        if progress is not None:
            progress.note(note)
    return network.to(device) if device is not None else network
