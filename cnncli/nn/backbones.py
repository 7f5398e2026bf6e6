"""Named backbones from timm: `model.backbone: resnet18` instead of a list of blocks.

timm (huggingface/pytorch-image-models) keeps hundreds of architectures with pretrained weights
on the Hugging Face hub; we take one without its classifier (its global pool kept), so that it
turns the stem's picture (channels, height, width) into one feature vector, and put our own
classifier on top. One-channel pictures (grayscale images, spectrograms) are read through
timm's `in_chans`. timm is an optional extra, imported only when a recipe names a backbone: it
takes seconds to import, and `cnncli --help` must stay instant.

The layer table, feature maps and Grad-CAM see a named backbone as its stages (`stages()`): the
timm model's top-level modules, a sequence of blocks opened one level (layer1.0, layer1.1, ...).
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from cnncli.errors import CnncliError
from cnncli.nn.blocks import Size, output_shape

INSTALL_HINT = "install cnncli[timm] (pip install 'cnncli[timm]')"
# Options cnncli sets itself, or that would load weights behind the recipe's back (through pickle).
RESERVED_OPTIONS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict", "checkpoint_path",
                    "cache_dir", "num_classes", "in_chans", "features_only")


def import_timm():
    """timm, or one line saying how to get it."""
    try:
        import timm
    except ImportError:
        raise CnncliError(f"model.backbone: named backbones come from timm, which is not installed; "
                          f"{INSTALL_HINT}") from None
    return timm


def check_backbone(name: str, options: dict) -> None:
    """A name timm knows and options cnncli leaves to it; otherwise one line with close names."""
    timm = import_timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5] or difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" (close: {', '.join(close)})" if close else " (timm.list_models() lists them)"
        raise CnncliError(f"model.backbone: unknown timm model {name!r}{hint}")
    reserved = [key for key in options if key in RESERVED_OPTIONS]
    if reserved:
        raise CnncliError(f"model.backbone_options.{reserved[0]}: set by cnncli itself (weights come from "
                          "model.pretrained or model.init; channels and classes from the data)")


class TimmBackbone(nn.Module):
    """A timm model without its classifier: pictures (N, C, H, W) -> features (N, F)."""

    def __init__(self, name: str, options: dict, channels: int):
        super().__init__()
        timm = import_timm()
        check_backbone(name, options)
        self.name = name
        try:
            self.model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=channels, **options)
        except (TypeError, ValueError, AssertionError, RuntimeError) as error:
            raise CnncliError(f"model.backbone_options: timm cannot build {name} with {options} "
                              f"({_first_line(error)})") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def pretrained_cfg(self) -> dict:
        """What timm knows of the weights this architecture is usually trained with (first conv, classifier,
        mean, std, input size)."""
        return dict(getattr(self.model, "pretrained_cfg", None) or {})

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The rows the layer table shows, in the order they run: the timm model's top-level modules, a
        sequence of blocks opened one level; modules that do nothing (an empty classifier) are left out."""
        rows = []
        for name, child in self.model.named_children():
            if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child):
                rows += [(f"{name}.{inner}", block) for inner, block in child.named_children()]
            elif not isinstance(child, nn.Identity):
                rows.append((name, child))
        return rows


def build_backbone(name: str, options: dict, shape: tuple[int, ...]) -> tuple[TimmBackbone, tuple[int, ...]]:
    """The timm backbone for stem outputs of `shape` (channels, height, width), and its output shape."""
    module = TimmBackbone(name, options, _channels(name, shape))
    try:
        return module, output_shape(module, shape)
    except RuntimeError as error:
        raise CnncliError(f"model.backbone: {name} cannot read pictures of shape {list(shape)} "
                          f"({_first_line(error)})") from None


def backbone_size(name: str, options: dict, shape: tuple[int, ...]) -> Size:
    """The Size of the backbone `build_backbone` makes, built and run on the meta device (shapes
    without storage); its activations are the outputs of all its layers. Where timm's layers
    cannot run on the meta device, its own count of features is trusted and activations are not counted."""
    values = []

    def count(module, args, out):
        if isinstance(out, torch.Tensor) and not list(module.children()):
            values.append(out[0].numel())

    with torch.device("meta"):
        module = TimmBackbone(name, options, _channels(name, shape))
        parameters = sum(parameter.numel() for parameter in module.parameters())
        hooks = [layer.register_forward_hook(count) for layer in module.modules()]
        try:
            module.eval()
            out = tuple(module(torch.zeros((1, *shape)))[0].shape)
        except (RuntimeError, NotImplementedError):
            out, values = (module.model.num_features,), []
        finally:
            for hook in hooks:
                hook.remove()
    return Size(out, parameters, sum(values))


def _channels(name: str, shape: tuple[int, ...]) -> int:
    if len(shape) != 3 or min(shape) < 1:
        raise CnncliError(f"model.backbone: {name} reads pictures (channels, height, width); the stem makes "
                          f"{list(shape)}")
    return shape[0]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def stage_outputs(backbone: TimmBackbone, shape: tuple[int, ...]) -> list[tuple[tuple[int, ...], str]]:
    """For each stage, its output shape for one picture of `shape`, and the input window (height x
    width) the centre cell of its output depends on, read off that cell's gradient on a random
    picture: skip connections and attention leave no formula to follow ("all" for an output
    with no height and width)."""
    stages = backbone.stages()
    captured: dict[int, torch.Tensor] = {}
    hooks = [stage.register_forward_hook(lambda module, args, out, index=index: captured.__setitem__(index, out))
             for index, (_, stage) in enumerate(stages)]
    device = next(backbone.parameters()).device
    picture = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0)).to(device).requires_grad_(True)
    was_training = backbone.training
    backbone.eval()
    results = []
    try:
        with torch.enable_grad():
            backbone(picture)
            for index in range(len(stages)):
                out = captured.get(index)
                if not isinstance(out, torch.Tensor):
                    results.append(((), "all"))
                    continue
                window = "all"
                if out.dim() == 4 and out.requires_grad:
                    centre = out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum()
                    window = _window(torch.autograd.grad(centre, picture, retain_graph=True)[0][0])
                results.append((tuple(out.shape[1:]), window))
    finally:
        backbone.train(was_training)
        for hook in hooks:
            hook.remove()
    return results


def _window(gradient: torch.Tensor) -> str:
    """The extent (height x width) of the cells where a gradient is not zero."""
    reached = gradient.abs().sum(0) > 0
    rows, columns = reached.any(1).nonzero().flatten(), reached.any(0).nonzero().flatten()
    if not len(rows):
        return "0x0"
    return f"{int(rows[-1] - rows[0]) + 1}x{int(columns[-1] - columns[0]) + 1}"


def spread_centres(cells: tuple[int, int], size: tuple[int, int]) -> tuple[list[float], list[float]]:
    """Where the cells of a stage's (h, w) output sit on an (H, W) input, for Grad-CAM: evenly, each
    covering H / h by W / w input cells, as timm's convolutions padded to keep the grid centred
    place them; in cell_centres' form (centre of cell 0, distance between cells), per axis."""
    step = [size[axis] / cells[axis] for axis in range(2)]
    return [(step[axis] - 1) / 2 for axis in range(2)], step


def describe_stage(stage: nn.Module) -> str:
    """A stage of several layers in a few words: its blocks ("2 x BasicBlock") and its channels
    and convolutions ("64->128, 3 convs"); "" for a single layer (the layer table describes it)."""
    children = list(stage.children())
    if not children:
        return ""
    kinds = sorted({type(child).__name__ for child in children})
    blocks = f"{len(children)} x {kinds[0]}, " if isinstance(stage, (nn.Sequential, nn.ModuleList)) and \
        len(kinds) == 1 else ""
    convolutions = [layer for layer in stage.modules() if isinstance(layer, nn.Conv2d)]
    if not convolutions:
        return blocks.removesuffix(", ") or f"{sum(1 for _ in stage.modules()) - 1} layers"
    channels = f"{convolutions[0].in_channels}->{max(layer.out_channels for layer in convolutions)}"
    return f"{blocks}{channels}, {len(convolutions)} conv{'s' if len(convolutions) > 1 else ''}"
