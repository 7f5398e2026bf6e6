"""What `cnncli train` accepts: a recipe file, or data (a folder, or a text manifest or labelled
text file) that gets a sensible default recipe: the modality's general one when it has one. A
data file that is no folder belongs to the modality whose samples may be lines of text (the one
that declares `text_samples`), found in the registry like any other."""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml

from cnncli.data.sources import MANIFEST_SUFFIXES, read_numbered_lines, starts_with_data
from cnncli.errors import CnncliError
from cnncli.modalities import MODALITIES

# A small, robust CNN for pictures of any size: images, and spectrograms as 1-channel images. The
# network `cnncli train DATA_FOLDER` uses unless the modality names its own (Modality.default_blocks).
SMALL_CNN = [
    {"conv": {"channels": 32, "kernel": 3, "padding": "same", "batch_norm": True}},
    {"pool": {"type": "max", "size": 2}},
    {"conv": {"channels": 64, "kernel": 3, "padding": "same", "batch_norm": True}},
    {"pool": {"type": "max", "size": 2}},
    {"conv": {"channels": 128, "kernel": 3, "padding": "same", "batch_norm": True}},
    {"pool": {"type": "avg", "size": "global"}},
    {"dropout": 0.3},
]


RECIPE_SUFFIXES = (".yaml", ".yml")


def recipe_source(argument: str) -> tuple[str | dict, str]:
    """(recipe path or dict, run name) for `cnncli train ARGUMENT`: a recipe file, a data folder,
    or a data file that is no recipe (a .csv/.tsv/.jsonl manifest or a labelled text file)."""
    path = Path(argument)
    if path.is_dir():
        return default_recipe(path), path.resolve().name
    if not path.exists():
        raise CnncliError(f"{argument}: no such recipe or data folder")
    if not path.is_file():  # /dev/zero never ends; a FIFO would wait for a writer
        raise CnncliError(f"{argument}: not a regular file; give a recipe (.yaml), a data folder or a data file")
    if path.suffix.lower() not in RECIPE_SUFFIXES and text_data_file(path):
        return default_recipe(path, lines_modality()), path.stem
    return str(path), path.stem


def lines_modality() -> str | None:
    """The name of the first registered modality whose samples may be lines of text
    (Modality.text_samples); None when no modality reads text."""
    return next((name for name, modality in MODALITIES.items() if modality.text_samples), None)


def text_data_file(path: Path) -> bool:
    """Whether a file given to `cnncli train` holds sentences rather than a recipe: a manifest
    with a text column (one of `lines_modality()`'s content columns), or a file of lines that is
    not a YAML mapping (a recipe without .yaml)."""
    name = lines_modality()
    if name is None:
        return False
    modality = MODALITIES.get(name)
    suffix = path.suffix.lower()
    if suffix in MANIFEST_SUFFIXES:
        lines = read_numbered_lines(path, "auto")
        return bool(lines) and (any(column in lines[0][1].lower() for column in modality.content_columns)
                                or starts_with_data(path, lines, modality))
    if suffix in _all_extensions() - set(modality.extensions):
        return False  # an image or a recording: its own error follows
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return not isinstance(yaml.safe_load(handle.read(65536)), dict)
    except yaml.YAMLError:
        return True


def _all_extensions() -> set[str]:
    return {suffix for _, modality in MODALITIES.items() for suffix in modality.extensions}


def default_recipe(data_path: Path, name: str | None = None) -> dict:
    """A recipe for a data folder (or, with `name`, a data file of that modality), its modality
    guessed from the file suffixes; the modality's general recipe when it has one."""
    if name is None:
        name = guess_modality(data_path)
    modality = MODALITIES.get(name)
    root, train = (data_path.resolve(), ".") if data_path.is_dir() else (data_path.resolve().parent, data_path.name)
    if modality.default_recipe:
        recipe = copy.deepcopy(modality.default_recipe)
        recipe["data"] = {**recipe.get("data", {}), "modality": name, "root": str(root), "train": train}
        return {"description": f"the general {name} recipe for {data_path}", **recipe}
    data = {"modality": name, "root": str(root), "train": train,
            "split": {"test_fraction": 0.2, "val_fraction": 0.1}}
    if modality.default_options:
        data[name] = dict(modality.default_options)
    return {
        "description": f"default {name} recipe for {data_path}",
        "data": data,
        "model": {"blocks": modality.default_blocks or SMALL_CNN},
        "train": {"epochs": 20, "optimizer": "adamw", "lr": 0.002, "schedule": "cosine", "weight_decay": 0.01},
    }


def fitted_model(config, modality, samples: int, fits: Callable[[list], bool] = lambda blocks: True):
    """`config` with `model.blocks: auto` replaced by what the fitted modality chooses for
    `samples` training samples (`auto_blocks`: images size a residual net to the data), and the
    line that says what it chose; other recipes are returned as they are. Of the modality's
    candidates (the data's first, then smaller ones), the first that `fits` (a time budget) is
    taken, or the smallest. The bundle records the blocks chosen, so predict builds the same."""
    if config.model.blocks != "auto":
        return config, []
    candidates = modality.auto_blocks(samples)
    if not candidates:
        raise CnncliError(f"model.blocks: auto: {modality.name} data have no backbone of their own; list the blocks")
    blocks, note = next((candidate for candidate in candidates if fits(candidate[0])), candidates[-1])
    if blocks is not candidates[0][0]:
        note += f" (not {candidates[0][1].split(': ', 1)[1].split(' (')[0]}: too slow for train.budget)"
    return dataclasses.replace(config, model=dataclasses.replace(config.model, blocks=blocks)), [note]


def guess_modality(folder: Path) -> str:
    """The modality most of a folder's files belong to, by suffix."""
    suffixes = Counter(p.suffix.lower() for p in folder.rglob("*") if p.is_file())
    votes = {name: sum(suffixes[s] for s in modality.extensions) for name, modality in MODALITIES.items()}
    name = max(votes, key=votes.get)
    if not votes[name]:
        raise CnncliError(f"{folder}: found no files of any modality ({', '.join(MODALITIES)}); give a recipe instead")
    return name
