"""The model bundle: a folder a user can copy, read and trust.

    BUNDLE/
      model.json           resolved recipe, labels, preprocessing state, split, metrics, versions
      weights.safetensors  the network's tensors (no pickle: loading runs no code)
      log.jsonl            one JSON line per training epoch
      *.png                curves and the confusion matrix, when written

Writes go to a temporary sibling folder that is then renamed over the target, so a crash
leaves either the previous bundle or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnncli import __version__
from cnncli.config import Config, config_from_dict, config_to_dict
from cnncli.errors import CnncliError

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
    import torch

    found = {"cnncli": __version__, "python": platform.python_version(), "torch": torch.__version__}
    try:
        import torchaudio

        found["torchaudio"] = torchaudio.__version__
    except ImportError:
        pass
    return found


def save_bundle(path: Path, network, config: Config, labels: list[str], modality, *, status: str,
                split: dict, metrics: dict, training: dict, log: list[dict],
                extra_files: dict[str, bytes] | None = None) -> Path:
    """Write a whole bundle atomically at `path` (replacing an older bundle there)."""
    from safetensors.torch import save_file

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
        "members": len(getattr(network, "members", [network])),  # an ensemble's networks
        "modality": {"name": modality.name, "state": modality.state_dict()},
        "split": split,
        "metrics": metrics,
        "training": training,
        "seed": config.train.seed,
        "versions": versions(),
        "recipe": config_to_dict(config),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": FORMAT})
        (staging / MODEL_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (staging / LOG_FILE).write_text("".join(json.dumps(record) + "\n" for record in log), encoding="utf-8")
        for name, content in (extra_files or {}).items():
            (staging / name).write_bytes(content)
        os.chmod(staging, 0o755)
        replace_folder(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def replace_folder(new: Path, target: Path) -> None:
    """Move `new` to `target`; an existing `target` is swapped out first and then deleted."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from cnncli.modalities import modality_class
    from cnncli.model import Ensemble, build_network

    path = Path(path)
    info = read_info(path)
    config = config_from_dict(info["recipe"], origin=str(path / MODEL_FILE))
    modality = modality_class(info["modality"]["name"]).from_state(info["modality"]["state"])
    members = [build_network(config.model.blocks, modality.build_stem(), tuple(info["input_shape"]),
                             len(info["labels"])) for _ in range(info.get("members", 1))]
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


def read_log(path: Path) -> list[dict]:
    log_file = Path(path) / LOG_FILE
    if not log_file.exists():
        return []
    return [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines() if line.strip()]
