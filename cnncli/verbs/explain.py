"""`cnncli inspect BUNDLE --input X`: what a network makes of one input, block by block.

For one sample: the picture the network reads (drawn by its modality), the whole way at a
glance (the first maps of every block in a row, as CNN Explainer draws it), the output of every
block of the backbone (feature maps, or a strip for a vector), the first layer's filters, the
class probabilities, a Grad-CAM heat map drawn over the input by its modality, and the
modality's own explanation (text: token saliency). Everything is written as PNGs to one
folder, and described in the returned dict so that an HTML page can walk through it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.files.atomic import write_file
from cnncli.modalities.base import stem_picture
from cnncli.nn.calibration import scaled_probabilities
from cnncli.nn.gradcam import grad_cam
from cnncli.nn.layers import named_blocks
from cnncli.nn.model import members_of

TOP_CLASSES = 10  # bars in the probability chart


def block_outputs(network: nn.Module, encoded: torch.Tensor,
                  temperature: float = 1.0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({block name: its output for one encoded input}, class probabilities); the outputs are
    those of the first member of an ensemble, the probabilities the whole network's, divided by
    the bundle's `temperature` as predict scores them (cnncli.nn.calibration)."""
    captured, hooks = {}, []
    for name, block in named_blocks(members_of(network)[0].backbone):
        hooks.append(block.register_forward_hook(
            lambda module, args, out, name=name: captured.__setitem__(name, out[0].detach().cpu())))
    network.eval()
    try:
        with torch.no_grad():
            outputs = network(encoded.unsqueeze(0).to(next(network.parameters()).device))
            probabilities = scaled_probabilities(outputs, temperature)[0]
    finally:
        for hook in hooks:
            hook.remove()
    return captured, probabilities.cpu()


def explain_input(bundle, locator: str, out_dir: Path, layer: str | None = None) -> dict:
    """Explain the first sample `locator` names (a file, or a sentence for text) into `out_dir`."""
    samples = list(bundle.modality.expand_inputs([locator]))
    if not samples:
        raise CnncliError(f"{locator}: no input found there")
    return explain_sample(bundle, samples[0], out_dir, layer)


def explain_sample(bundle, sample: Sample, out_dir: Path, layer: str | None = None) -> dict:
    """Every picture of one sample's way through the network, written to `out_dir`, and what
    they show: {"input", "description", "top", "pictures", "blocks", "gradcam", "files", ...}."""
    from cnncli.output.plots import filters_png, overview_png, probabilities_png

    modality, network, labels = bundle.modality, bundle.network, bundle.labels
    encoded = modality.encode(sample)
    cam = grad_cam(network, encoded, layer)  # first: a wrong --layer fails before anything is drawn
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = {"input": out_dir / "input.png"}
    modality.draw(sample, pictures["input"], network)
    outputs, probabilities = block_outputs(network, encoded, bundle.temperature)
    blocks = _draw_blocks(outputs, out_dir, modality.rows_upward)
    picture = stem_picture(network, encoded)
    pictures["overview"] = saved(out_dir / "overview.png", overview_png(
        picture, _changing(picture, outputs), labels, probabilities, modality.rows_upward))
    caption = f"Grad-CAM for {labels[cam.target]} at {', '.join(cam.layers)}"
    pictures["gradcam"] = saved(out_dir / "gradcam.png", modality.draw_heatmap(sample, cam.heat, network, caption))
    pictures["probabilities"] = saved(out_dir / "probabilities.png",
                                      probabilities_png(labels, probabilities, TOP_CLASSES))
    first = next((m for m in members_of(network)[0].backbone.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        kernel = "x".join(map(str, first.kernel_size))
        title = f"first-layer filters: {first.out_channels} of {first.in_channels}x{kernel}"
        pictures["filters"] = saved(out_dir / "filters.png", filters_png(first.weight, title))
    scores, indices = probabilities.topk(min(3, len(labels)))
    result = {"input": sample.locator, "description": modality.describe(),
              "top": [{"label": labels[int(i)], "score": round(float(s), 6)} for s, i in zip(scores, indices)],
              "probabilities": {label: round(float(p), 6) for label, p in zip(labels, probabilities)},
              "gradcam": cam.describe(labels), "pictures": {key: str(path) for key, path in pictures.items()},
              "blocks": blocks, "members": len(members_of(network))}
    result["files"] = [result["pictures"]["input"]] + [b["picture"] for b in blocks] + [
        str(path) for key, path in pictures.items() if key != "input"]
    if result["members"] > 1:
        result["maps_from"] = (f"the first of the {result['members']} members (the probabilities and Grad-CAM "
                               "are the ensemble's)")
    explanation = modality.explain(network, sample)
    if explanation:
        result["explanation"] = explanation
    return result


def _changing(picture: torch.Tensor, outputs: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """The blocks whose output differs from their input (dropout does nothing at inference)."""
    kept, previous = [], picture
    for name, activation in outputs.items():
        if activation.shape != previous.shape or not torch.equal(activation, previous):
            kept.append((name, activation))
        previous = activation
    return kept


def saved(path: Path, content: bytes) -> Path:
    """Write a picture atomically and say where it went."""
    write_file(path, content)
    return path


def _draw_blocks(outputs: dict[str, torch.Tensor], out_dir: Path, upward: bool) -> list[dict]:
    """features-BLOCK.png per block: its maps for a (C, H, W) output, one strip for a vector."""
    from cnncli.output.plots import feature_maps_png, matrix_png

    blocks = []
    for name, activation in outputs.items():
        shape = list(activation.shape)
        path = out_dir / f"features-{name.replace('.', '-')}.png"
        if activation.dim() == 3 and activation.shape[1] * activation.shape[2] > 1:
            title = f"{name}: {shape[0]} maps {shape[1]}x{shape[2]}"
            write_file(path, feature_maps_png(activation, title, upward=upward))
        else:
            values = activation.flatten()
            write_file(path, matrix_png(values.view(1, -1), f"{name}: {len(values)} values",
                                        f"feature (of {len(values)})"))
        blocks.append({"name": name, "shape": shape, "picture": str(path)})
    return blocks
