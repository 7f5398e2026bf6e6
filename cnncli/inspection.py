"""`cnncli inspect`: what a network sees of one input, and the summary of a bundle or a recipe.

For an input: the picture the network reads (drawn by its modality), the feature maps after each
convolution block, the prediction, and the modality's explanation (text: token saliency). For a
bundle or a recipe: the layer table (cnncli.layers), labels, metrics and split.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnncli.atomic import write_file
from cnncli.bundle import MODEL_FILE, load_bundle
from cnncli.calibration import scaled_probabilities
from cnncli.config import config_to_dict, load_config
from cnncli.data.split import load_splits
from cnncli.errors import CnncliError
from cnncli.layers import layer_table
from cnncli.modalities import modality_class
from cnncli.model import network_for
from cnncli.recipes import recipe_source


def feature_maps(network: nn.Module, encoded: torch.Tensor) -> dict[str, torch.Tensor]:
    """Activations (C, H, W) after each conv block of the backbone for one encoded input, and the
    network's outputs under "__outputs__"."""
    captured, hooks = {}, []
    for name, module in network.backbone.named_modules():
        if isinstance(module, nn.Sequential) and any(isinstance(m, nn.Conv2d) for m in module.children()):
            hooks.append(module.register_forward_hook(
                lambda mod, args, out, name=name: captured.__setitem__(name, out[0].detach().cpu())))
    network.eval()
    try:
        with torch.no_grad():
            outputs = network(encoded.unsqueeze(0))
    finally:
        for hook in hooks:
            hook.remove()
    captured["__outputs__"] = outputs
    return captured


def explain_input(bundle, locator: str, out_dir: Path) -> dict:
    """For one input: its picture as the network sees it, the feature maps, and the prediction."""
    from cnncli.plots import feature_maps_png

    modality = bundle.modality
    samples = list(modality.expand_inputs([locator]))
    if not samples:
        raise CnncliError(f"{locator}: no input found there")
    sample = samples[0]
    encoded = modality.encode(sample)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    input_png = out_dir / "input.png"
    modality.draw(sample, input_png, bundle.network)
    written = [str(input_png)]
    maps = feature_maps(bundle.network, encoded)
    probabilities = scaled_probabilities(maps.pop("__outputs__"), bundle.temperature)[0]  # as predict scores it
    for name, activation in maps.items():
        if activation.dim() == 3:
            path = out_dir / f"features-{name.replace('.', '-')}.png"
            write_file(path, feature_maps_png(activation, f"{name}: {activation.shape[0]} maps "
                                                          f"{activation.shape[1]}x{activation.shape[2]}"))
            written.append(str(path))
    scores, indices = probabilities.topk(min(3, len(bundle.labels)))
    result = {"input": locator, "files": written,
              "top": [{"label": bundle.labels[int(i)], "score": round(float(s), 6)} for s, i in zip(scores, indices)]}
    explanation = modality.explain(bundle.network, sample)
    if explanation:
        result["explanation"] = explanation
    return result


def describe_target(target: str, overrides: list[str], resolved: bool) -> dict:
    """The layer table of a bundle or a recipe (or the resolved recipe as YAML)."""
    if (Path(target) / MODEL_FILE).exists():
        if overrides:
            raise CnncliError("--set applies to recipes; a bundle's recipe is fixed")
        bundle = load_bundle(target)
        if resolved:
            return {"resolved": bundle.info["recipe"]}
        table = layer_table(bundle.network, tuple(bundle.info["input_shape"]), bundle.modality.describe())
        info = bundle.info
        return {"target": target, "kind": "bundle", "labels": bundle.labels, "metrics": info.get("metrics", {}),
                "calibration": info.get("calibration"), "status": info.get("status"), "split": info.get("split"),
                **table}
    return describe_recipe(target, overrides, resolved)


def describe_recipe(target: str, overrides: list[str], resolved: bool) -> dict:
    """The layer table of the network a recipe would train (its data read if they can be)."""
    source, _ = recipe_source(target)
    config = load_config(source, overrides)
    if resolved:
        return {"resolved": config_to_dict(config)}
    modality_type = modality_class(config.data.modality)
    note = ""
    modality = modality_type.from_config(config)
    try:
        splits = load_splits(config, modality_type)
        labels = splits.labels
        modality.fit(splits.train)  # what is learned from data (a vocabulary) sizes the stem
    except CnncliError as error:
        labels = [str(i) for i in range(10)]
        note = f"data not readable ({error}); counted for 10 classes"
    network = network_for(modality, config.model.blocks, len(labels))
    table = layer_table(network, modality.input_shape, modality.describe())
    return {"target": target, "kind": "recipe", "classes": len(labels), "note": note, **table,
            "members": config.train.ensemble}
