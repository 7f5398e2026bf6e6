"""What `cnncli train` accepts: a recipe file, or a data folder that gets a sensible default recipe."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cnncli.errors import CnncliError

# A small, robust CNN for pictures of any size: images, and spectrograms as 1-channel images.
SMALL_CNN = [
    {"conv": {"channels": 32, "kernel": 3, "padding": "same", "batch_norm": True}},
    {"pool": {"type": "max", "size": 2}},
    {"conv": {"channels": 64, "kernel": 3, "padding": "same", "batch_norm": True}},
    {"pool": {"type": "max", "size": 2}},
    {"conv": {"channels": 128, "kernel": 3, "padding": "same", "batch_norm": True}},
    {"pool": {"type": "avg", "size": "global"}},
    {"dropout": 0.3},
]
# Kim (2014): filters of widths 3, 4 and 5 spanning the embedding, max over time.
KIM_CNN = [
    {"parallel": [[{"conv": {"channels": 100, "kernel": [width, "full"]}},
                   {"pool": {"type": "max", "size": "global"}}] for width in (3, 4, 5)]},
    {"dropout": 0.5},
]
# The network `cnncli train DATA_FOLDER` uses for each modality when no recipe is given.
DEFAULT_BLOCKS = {"image": SMALL_CNN, "audio": SMALL_CNN, "text": KIM_CNN}


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
    from cnncli.modalities import REGISTRY, modality_class

    suffixes = Counter(p.suffix.lower() for p in folder.rglob("*") if p.is_file())
    votes = {name: sum(suffixes[s] for s in modality_class(name).extensions) for name in REGISTRY}
    modality = max(votes, key=votes.get)
    if not votes[modality]:
        raise CnncliError(f"{folder}: found no image, audio or text files; give a recipe instead")
    data = {"modality": modality, "root": str(folder.resolve()), "split": {"test_fraction": 0.2, "val_fraction": 0.1}}
    if modality == "image":
        data["image"] = {"size": [64, 64], "color": "rgb", "resize": "pad"}
    return {
        "description": f"default {modality} recipe for {folder}",
        "data": data,
        "model": {"blocks": DEFAULT_BLOCKS[modality]},
        "train": {"epochs": 20, "optimizer": "adamw", "lr": 0.002, "schedule": "cosine", "weight_decay": 0.01},
    }
