"""What `cnncli train` accepts: a recipe file, or a data folder that gets a sensible default recipe."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

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


def recipe_source(argument: str) -> tuple[str | dict, str]:
    """(recipe path or dict, run name) for `cnncli train ARGUMENT`."""
    path = Path(argument)
    if path.is_dir():
        return default_recipe(path), path.resolve().name
    if not path.exists():
        raise CnncliError(f"{argument}: no such recipe or data folder")
    return str(path), path.stem


def default_recipe(folder: Path) -> dict:
    """A recipe for a folder of class sub-folders, its modality guessed from the file suffixes."""
    suffixes = Counter(p.suffix.lower() for p in folder.rglob("*") if p.is_file())
    votes = {name: sum(suffixes[s] for s in modality.extensions) for name, modality in MODALITIES.items()}
    name = max(votes, key=votes.get)
    if not votes[name]:
        raise CnncliError(f"{folder}: found no files of any modality ({', '.join(MODALITIES)}); give a recipe instead")
    modality = MODALITIES.get(name)
    data = {"modality": name, "root": str(folder.resolve()), "split": {"test_fraction": 0.2, "val_fraction": 0.1}}
    if modality.default_options:
        data[name] = dict(modality.default_options)
    return {
        "description": f"default {name} recipe for {folder}",
        "data": data,
        "model": {"blocks": modality.default_blocks or SMALL_CNN},
        "train": {"epochs": 20, "optimizer": "adamw", "lr": 0.002, "schedule": "cosine", "weight_decay": 0.01},
    }
