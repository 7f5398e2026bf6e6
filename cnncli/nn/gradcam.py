"""Grad-CAM (Selvaraju et al., 2017): where in its input a network found the evidence for a class.

The activations A of a convolution (channels x h x w) are weighted, channel by channel, by the
mean gradient of the class's logit over that channel's map, summed and rectified: the cells
whose features raise the logit. Each cell is then placed back where its receptive field is
centred on the picture the backbone reads (the stem's output: pixels, a time x frequency
picture, token rows), so the heat map lies on that picture however the layers padded and
strode. Any modality gets it for free; each draws it over its own input (Modality.draw_heatmap).

By default the heat is taken at the last convolution on every path to the classifier (one for
a chain, the last of each branch of a final parallel block, as in Kim's text CNN), each map
scaled to a peak of 1 and averaged. A block holding convolutions counts as one: in a residual
network that is the last residual block's output, after its sum (`--layer res3.conv2` asks for
a layer inside it). An ensemble's members are all asked, for the class the
ensemble predicts, and their maps averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnncli.errors import CnncliError
from cnncli.nn.backbones import spread_centres
from cnncli.nn.layers import cell_centres, is_convolution, named_blocks, named_layers
from cnncli.nn.model import members_of


@dataclass
class GradCam:
    """A heat map (H, W) on the grid of the stem's output, 0..1 (1 at the hottest cell)."""

    heat: torch.Tensor
    layers: list[str]  # the layers it was taken at, as named in the layer table
    target: int  # the class it explains
    probabilities: torch.Tensor  # the network's class probabilities for the input
    members: int  # how many networks' maps were averaged (an ensemble's members)

    def describe(self, labels: list[str]) -> dict:
        """What `inspect` reports of it."""
        averaged = f"averaged over the {self.members} members of the ensemble" if self.members > 1 else "one network"
        return {"class": labels[self.target], "layers": self.layers, "members": averaged,
                "peak": [int(i) for i in divmod(int(self.heat.argmax()), self.heat.shape[1])]}


def convolution_names(network: nn.Module) -> list[str]:
    """The convolution blocks of a network's backbone, in the order they run."""
    return [name for name, block in named_blocks(members_of(network)[0].backbone) if is_convolution(block)]


def default_layers(network: nn.Module) -> list[str]:
    """The last convolution on every path to the classifier."""
    names = convolution_names(network)
    if not names:
        raise CnncliError("Grad-CAM: this network has no convolution to take it at")
    last = names[-1]
    if ".branch" not in last:
        return [last]
    parallel = last.split(".branch")[0]
    branches: dict[str, str] = {}
    for name in names:
        if name.startswith(parallel + ".branch"):
            branches[name[len(parallel) + 1:].split(".")[0]] = name  # the last conv of each branch wins
    return list(branches.values())


def grad_cam(network: nn.Module, encoded: torch.Tensor, layer: str | None = None,
             target: int | None = None) -> GradCam:
    """Grad-CAM of one encoded input for class `target` (default: the predicted class), at the
    layer named `layer` (default: `default_layers`)."""
    members = members_of(network)
    layers = [layer] if layer else default_layers(network)
    known = named_layers(members[0].backbone)
    for name in layers:
        if name not in known:
            raise CnncliError(f"--layer {name}: no such layer (convolutions: {', '.join(convolution_names(network))})")
    device = next(network.parameters()).device
    batch = encoded.unsqueeze(0).to(device)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            probabilities = torch.softmax(network(batch), dim=1)[0].cpu()
        target = int(probabilities.argmax()) if target is None else target
        maps = [_peak_one(_member_cam(member, batch, name, target)) for member in members for name in layers]
    finally:
        network.train(was_training)
    return GradCam(_peak_one(torch.stack(maps).mean(0)), layers, target, probabilities, len(members))


def _member_cam(network: nn.Module, batch: torch.Tensor, name: str, target: int) -> torch.Tensor:
    """One network's Grad-CAM at layer `name`, placed on the (H, W) grid of its stem's output."""
    module = named_layers(network.backbone)[name]
    captured = {}
    hook = module.register_forward_hook(lambda mod, args, out: captured.__setitem__("a", out))
    try:
        with torch.enable_grad():
            picture = network.stem(batch)
            logits = network.classifier(network.backbone(picture))
            activations = captured["a"]
            if activations.dim() != 4:
                raise CnncliError(f"--layer {name}: its output has no height and width (shape "
                                  f"{tuple(activations.shape[1:])}); name a convolution or pooling layer")
            gradients, = torch.autograd.grad(logits[0, target], activations)
    finally:
        hook.remove()
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(dim=1))[0].detach()
    size = tuple(picture.shape[2:])
    staged = callable(getattr(network.backbone, "stages", None))  # a named backbone: its grid spread evenly
    return place_on_input(cam, spread_centres(tuple(cam.shape), size) if staged else
                          cell_centres(network.backbone, name), size)


def place_on_input(cam: torch.Tensor, centres, size: tuple[int, int]) -> torch.Tensor:
    """Resample a layer's (h, w) map onto the (H, W) input grid: each input cell takes the map's
    value at its own position in the layer's cells (linear between cell centres, the edge value
    beyond them). `centres` is `cell_centres`' answer; None spreads the map's mean evenly."""
    if centres is None:
        return torch.full(size, float(cam.mean()), device=cam.device)
    (first_row, first_column), (row_step, column_step) = centres
    axes = []
    for count, first, step, cells in ((size[0], first_row, row_step, cam.shape[0]),
                                      (size[1], first_column, column_step, cam.shape[1])):
        position = (torch.arange(count, dtype=torch.float32, device=cam.device) - first) / step
        axes.append(2 * position / (cells - 1) - 1 if cells > 1 else torch.zeros(count, device=cam.device))
    rows, columns = torch.meshgrid(axes[0], axes[1], indexing="ij")
    grid = torch.stack([columns, rows], dim=-1).unsqueeze(0)
    return F.grid_sample(cam[None, None].float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=True)[0, 0]


def _peak_one(heat: torch.Tensor) -> torch.Tensor:
    peak = heat.max()
    return heat / peak if peak > 0 else heat
