"""Recipes: YAML files plus `--set key=value` overrides, resolved into one typed, validated Config.

The sections are declared in schema.py, built and checked by typed.py, overridden by
overrides.py and range-checked by ranges.py; this module reads a recipe through all four. Every
error names the key and where it came from (the recipe file or `--set`).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from cnncli.errors import CnncliError
from cnncli.modalities import MODALITIES
from cnncli.recipe.overrides import apply_override
from cnncli.recipe.ranges import check_values
from cnncli.recipe.safe_yaml import parse_yaml, read_text
from cnncli.recipe.schema import Config, schema
from cnncli.recipe.typed import build_typed, show


def load_config(source: str | Path | dict, overrides: list[str] = ()) -> Config:
    """Read a recipe file (or dict), apply `key=value` overrides, and validate the result.

    Relative `data.root` in a recipe file is resolved against the recipe's folder, so a recipe
    works from any working directory; a `--set data.root` is taken relative to where you are.
    """
    if isinstance(source, dict):
        raw, origin, base = copy.deepcopy(source), "recipe", Path.cwd()  # overrides must not touch the caller's dict
    else:
        path = Path(source)
        origin, base = str(path), path.resolve().parent
        raw = parse_yaml(read_text(path), str(path)) or {}
    if not isinstance(raw, dict):
        raise CnncliError(f"{origin}: a recipe must be a mapping with sections data, model, train, augment")
    drop_retired_keys(raw)
    root = raw.get("data", {}).get("root") if isinstance(raw.get("data"), dict) else None
    if isinstance(root, str) and not Path(root).expanduser().is_absolute():
        raw.setdefault("data", {})["root"] = str(base / root)
    for override in [None, *overrides]:
        if override is not None:
            apply_override(raw, override, origin)
        if raw.get("augment") == "auto":  # `augment: auto` is short for `augment: {auto: true}`
            raw["augment"] = {"auto": True}
    config = build_typed(schema(), raw, "", origin)
    check_values(config, origin)
    return config


def drop_retired_keys(raw: dict) -> None:
    """Remove the `data.<name>` keys older versions wrote and no longer read (Modality.retired_options),
    so old recipes and bundles still load."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for name, modality in MODALITIES.items():
        if isinstance(data.get(name), dict):
            for key in modality.retired_options:
                data[name].pop(key, None)


def config_to_dict(config: Config) -> dict:
    """The fully resolved recipe as plain data (what the bundle stores and `--resolved` prints)."""
    return dataclasses.asdict(config)


def config_from_dict(data: dict, origin: str = "bundle") -> Config:
    """Rebuild a Config from `config_to_dict` output (e.g. the recipe stored in a bundle), checked
    like a recipe file."""
    if not isinstance(data, dict):
        raise CnncliError(f"{origin}: expected the recipe as a mapping, got {show(data)}")
    data = copy.deepcopy(data)
    drop_retired_keys(data)
    config = build_typed(schema(), data, "", origin)
    check_values(config, origin)
    return config
