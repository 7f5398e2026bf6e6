"""`cnncli compare RUN ...`: runs side by side, in one table.

A row per bundle: the recipe keys whose values differ between the runs (and only those: what
the runs share says nothing about why they differ), validation and test metrics as training
recorded them, epochs, time, the network's parameters and the size of its weights. A folder
that is no bundle but holds bundles (runs/, a study's trials/) stands for them all. With --html,
one page draws every run's validation curves on the same axes (cnncli.output.experiments).
"""

from __future__ import annotations

from pathlib import Path

from cnncli.bundle.io import MODEL_FILE, WEIGHTS_FILE, load_bundle
from cnncli.errors import CnncliError
from cnncli.files.jsontext import dumps
from cnncli.recipe.keys import flat_keys
from cnncli.verbs.report import read_log

SCORES = ("accuracy", "macro_f1", "n")


def bundle_paths(targets: list[str]) -> list[Path]:
    """The bundles named: each target a bundle, or a folder whose subfolders hold bundles."""
    found: list[Path] = []
    for target in targets:
        path = Path(target)
        if (path / MODEL_FILE).is_file() or not path.is_dir():
            found.append(path)  # not a folder: load_bundle says why in one line
            continue
        inside = sorted(folder for folder in path.iterdir() if (folder / MODEL_FILE).is_file())
        if not inside:
            raise CnncliError(f"{target}: neither a cnncli bundle nor a folder of bundles")
        found.extend(inside)
    return found


def describe(path: Path) -> dict:
    """One run's row, and its epoch records for the curves."""
    bundle = load_bundle(path)
    metrics, training = bundle.info.get("metrics", {}), bundle.info.get("training", {})
    return {"run": str(path), "status": bundle.info.get("status"),
            "val": scores(metrics.get("val")), "test": scores(metrics.get("test")),
            "epochs": training.get("epochs_run"), "seconds": training.get("total_seconds"),
            "parameters": sum(parameter.numel() for parameter in bundle.network.parameters()),
            "bytes": (path / WEIGHTS_FILE).stat().st_size,
            "recipe": flat_keys(bundle.info.get("recipe", {})), "history": read_log(bundle)}


def scores(report: dict | None) -> dict | None:
    """A split's headline figures (None: the run did not score that split)."""
    return {key: report[key] for key in SCORES if key in report} if report else None


def compare_runs(targets: list[str]) -> dict:
    """The runs' rows, each with only the recipe keys that differ between them (`keys`)."""
    runs = [describe(path) for path in bundle_paths(targets)]
    every = list(dict.fromkeys(key for run in runs for key in run["recipe"]))
    keys = [key for key in every
            if len({dumps(run["recipe"].get(key), key, sort_keys=True) for run in runs}) > 1]
    for run in runs:
        run["recipe"] = {key: run["recipe"].get(key) for key in keys}
    return {"keys": keys, "runs": runs}
