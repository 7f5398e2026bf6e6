"""`cnncli inspect`: the summary of a bundle or a recipe: the layer table (cnncli.nn.layers), labels,
metrics and split. What a network makes of one input is cnncli.verbs.explain; a look at data before
training is cnncli.verbs.data_view.
"""

from __future__ import annotations

from pathlib import Path

from cnncli.bundle.io import MODEL_FILE, load_bundle
from cnncli.data.split import load_splits
from cnncli.errors import CnncliError
from cnncli.modalities import modality_class
from cnncli.nn.layers import layer_table
from cnncli.nn.model import network_for
from cnncli.recipe.config import config_to_dict, load_config
from cnncli.recipe.defaults import RECIPE_SUFFIXES, fitted_model, recipe_source, text_data_file


def is_data(target: str) -> bool:
    """A folder that is not a bundle, or a file of sentences (what `cnncli train` reads with the
    default text recipe): `inspect` looks at its data."""
    path = Path(target)
    if path.is_dir():
        return not (path / MODEL_FILE).exists()
    return path.is_file() and path.suffix.lower() not in RECIPE_SUFFIXES and text_data_file(path)


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
        config, _ = fitted_model(config, modality, len(splits.train))  # model.blocks: auto
    except CnncliError as error:
        labels = [str(i) for i in range(10)]
        note = f"data not readable ({error}); counted for 10 classes"
    network = network_for(modality, config.model, len(labels))
    table = layer_table(network, modality.input_shape, modality.describe())
    return {"target": target, "kind": "recipe", "classes": len(labels), "note": note, **table,
            "members": config.train.ensemble}
