"""The model bundle: a folder a user can copy, read and trust.

    BUNDLE/
      model.json           resolved recipe, labels, preprocessing state, split, metrics, versions
      weights.safetensors  the network's tensors (no pickle: loading runs no code)
      log.jsonl            one JSON line per training epoch
      *.png                curves and the confusion matrix, when written

Writes go to a temporary sibling folder that is then swapped with the target (cnncli.atomic),
so a crash leaves either the previous bundle or the new one, never half of one.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cnncli import __version__
from cnncli.atomic import staged_folder
from cnncli.config import Config, config_from_dict, config_to_dict, load_config
from cnncli.errors import CnncliError
from cnncli.modalities import MODALITIES, modality_class
from cnncli.model import Ensemble, members_of, network_for
from cnncli.resume_state import STATE_FILE, TENSORS_FILE, TrainState, from_files

FORMAT = "cnncli-bundle"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
LOG_FILE = "log.jsonl"


@dataclass
class Bundle:
    """A loaded bundle: everything eval, predict and inspect need."""

    path: Path
    config: Config
    labels: list[str]
    modality: Any  # a fitted Modality
    network: Any  # cnncli.model.Network with its weights loaded
    info: dict = field(default_factory=dict)  # the whole model.json


def versions() -> dict[str, str]:
    """The versions that made a bundle (read from package metadata: nothing is imported for it)."""
    found = {"cnncli": __version__, "python": platform.python_version(), "torch": torch.__version__}
    try:
        found["torchaudio"] = metadata.version("torchaudio")
    except metadata.PackageNotFoundError:
        pass
    return found


def save_bundle(path: Path, network, config: Config, labels: list[str], modality, *, status: str,
                split: dict, metrics: dict, training: dict, log: list[dict],
                extra_files: dict[str, bytes] | None = None) -> Path:
    """Write a whole bundle atomically at `path` (replacing an older bundle there)."""

    path = Path(path)
    if path.exists() and not (path / MODEL_FILE).exists():
        if not path.is_dir() or any(path.iterdir()):
            raise CnncliError(f"{path}: exists and is not a cnncli bundle; choose another --out")
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "status": status,
        "labels": labels,
        "input_shape": list(modality.input_shape),
        "members": len(members_of(network)),  # an ensemble's networks
        "modality": {"name": modality.name, "state": modality.state_dict()},
        "split": split,
        "metrics": metrics,
        "training": training,
        "seed": config.train.seed,
        "versions": versions(),
        "recipe": config_to_dict(config),
    }
    with staged_folder(path) as staging:
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": FORMAT})
        (staging / MODEL_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (staging / LOG_FILE).write_text("".join(json.dumps(record) + "\n" for record in log), encoding="utf-8")
        for name, content in (extra_files or {}).items():
            (staging / name).write_bytes(content)
    return path


def read_info(path: Path) -> dict:
    """model.json of a bundle, checked to be one."""
    path = Path(path)
    model_file = path / MODEL_FILE
    if not path.is_dir() or not model_file.exists():
        raise CnncliError(f"{path}: not a cnncli bundle (no {MODEL_FILE}); train one with `cnncli train`")
    try:
        info = json.loads(model_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CnncliError(f"{model_file}: unreadable ({error})") from None
    if info.get("format") != FORMAT:
        raise CnncliError(f"{model_file}: not a cnncli bundle (format is {info.get('format')!r})")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise CnncliError(f"{model_file}: made by a newer cnncli (bundle format {info['format_version']}); upgrade")
    return info


def load_bundle(path: str | Path, device=None) -> Bundle:
    """Load a bundle: JSON and safetensors only, so nothing in it can run code."""

    path = Path(path)
    info = read_info(path)
    config = config_from_dict(info["recipe"], origin=str(path / MODEL_FILE))
    modality = modality_class(info["modality"]["name"]).from_state(info["modality"]["state"])
    members = [network_for(modality, config.model.blocks, len(info["labels"])) for _ in range(info.get("members", 1))]
    network = members[0] if len(members) == 1 else Ensemble(members)
    weights_file = path / WEIGHTS_FILE
    try:
        tensors = load_file(str(weights_file))
    except (OSError, SafetensorError) as error:
        raise CnncliError(f"{weights_file}: unreadable weights ({error})") from None
    try:
        network.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise CnncliError(f"{weights_file}: does not match the recipe's network ({str(error).splitlines()[0]})") from None
    network.eval()
    if device is not None:
        network.to(device)
    return Bundle(path, config, list(info["labels"]), modality, network, info)


# ---------------------------------------------------------------------------------------------
# The resume state of a partial bundle

def resume_may_change() -> set[str]:
    """Recipe keys that say only where and how fast a run goes, so a resumed run may change them."""
    return {"train.threads", "train.device"} | {
        f"data.{name}.{key}" for name, modality in MODALITIES.items() for key in modality.run_options}


def read_resume_state(path: str | Path, overrides: list[str] = ()) -> tuple[Any, TrainState]:
    """The recipe and training state saved in a partial bundle, for `train --resume`. Only where
    and how fast it runs may change (train.threads, train.device, the audio cache)."""

    path = Path(path)
    info = read_info(path)
    if info["status"] == "complete":
        raise CnncliError(f"{path}: this run finished; there is nothing to resume")
    if not (path / STATE_FILE).exists() or not (path / TENSORS_FILE).exists():
        raise CnncliError(f"{path}: has no resume state ({STATE_FILE}); it was written by an older cnncli")
    config = load_config(info["recipe"], list(overrides))
    may_change = resume_may_change()
    changed = _changed_keys(config_to_dict(config), info["recipe"]) - may_change
    if changed:
        raise CnncliError(f"--set {sorted(changed)[0]}: cannot change when resuming (only "
                          f"{', '.join(sorted(may_change))}); start a new run instead")
    try:
        tensors = load_file(str(path / TENSORS_FILE))
        meta = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        return config, from_files(tensors, meta)
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError) as error:
        raise CnncliError(f"{path}: unreadable resume state ({error})") from None


def _changed_keys(new: dict, old: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key in set(new) | set(old):
        a, b, name = new.get(key), old.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            keys |= _changed_keys(a, b, f"{name}.")
        elif a != b:
            keys.add(name)
    return keys
