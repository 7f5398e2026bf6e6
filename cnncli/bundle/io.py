"""The model bundle: a folder a user can copy, read and trust.

    BUNDLE/
      model.json           resolved recipe, labels, preprocessing state, split, metrics, versions
      weights.safetensors  the network's tensors (no pickle: loading runs no code)
      log.jsonl            one JSON line per training epoch
      *.png                curves and the confusion matrix, when written

Writes go to a temporary sibling folder that is then swapped with the target (cnncli.files.atomic),
so a crash leaves either the previous bundle or the new one, never half of one. Loading checks
the bundle whole before building anything (cnncli.bundle.schema): model.json's keys and limits,
the recipe, the modality's state, then the weights' names and shapes against the network they
must fill, and that they are finite numbers.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cnncli import __version__
from cnncli.bundle.resume_state import STATE_FILE, TENSORS_FILE, TrainState, from_files
from cnncli.bundle.schema import FORMAT, FORMAT_VERSION, check_info
from cnncli.errors import CnncliError
from cnncli.files.atomic import give_umask_permissions, staged_folder
from cnncli.files.jsontext import dumps, loads
from cnncli.files.reading import read_limited
from cnncli.limits import MAX_RECIPE_BYTES
from cnncli.modalities import MODALITIES, modality_class
from cnncli.nn.model import Ensemble, check_network_size, members_of, network_for
from cnncli.recipe.config import config_from_dict, config_to_dict, load_config
from cnncli.recipe.schema import Config
from cnncli.recipe.typed import build_typed

__all__ = ["FORMAT", "FORMAT_VERSION", "Bundle", "load_bundle", "read_info", "save_bundle"]
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
    network: Any  # cnncli.nn.model.Network with its weights loaded
    info: dict = field(default_factory=dict)  # the whole model.json

    @property
    def temperature(self) -> float:
        """The calibration temperature training fitted; 1.0 (scores as they were) when it has none."""
        return float((self.info.get("calibration") or {}).get("temperature") or 1.0)


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
                extra_files: dict[str, bytes] | None = None, calibration: dict | None = None) -> Path:
    """Write a whole bundle atomically at `path` (replacing an older bundle there). `calibration`
    holds the temperature predict and eval divide the outputs by (cnncli.nn.calibration)."""

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
        **({"calibration": calibration} if calibration else {}),
        "training": training,
        "seed": config.train.seed,
        "versions": versions(),
        "recipe": config_to_dict(config),
    }
    with staged_folder(path) as staging:
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": FORMAT})
        give_umask_permissions(staging / WEIGHTS_FILE)
        (staging / MODEL_FILE).write_text(dumps(info, str(path / MODEL_FILE), indent=2) + "\n", encoding="utf-8")
        (staging / LOG_FILE).write_text("".join(dumps(record, str(path / LOG_FILE)) + "\n" for record in log),
                                        encoding="utf-8")
        for name, content in (extra_files or {}).items():
            (staging / name).write_bytes(content)
    return path


def read_info(path: Path) -> dict:
    """model.json of a bundle, checked to be one (cnncli.bundle.schema)."""
    path = Path(path)
    model_file = path / MODEL_FILE
    if not path.is_dir() or not model_file.is_file():
        raise CnncliError(f"{path}: not a cnncli bundle (no {MODEL_FILE}); train one with `cnncli train`")
    content = read_limited(model_file, MAX_RECIPE_BYTES, "cnncli bundle's model.json")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CnncliError(f"{model_file}: byte {error.start} is not UTF-8; not a cnncli bundle") from None
    return check_info(loads(text, str(model_file)), str(model_file))


def load_bundle(path: str | Path, device=None) -> Bundle:
    """Load a bundle: JSON and safetensors only, so nothing in it can run code; checked whole
    (keys, limits, recipe, modality state, the weights' names, shapes and values) before use."""

    path = Path(path)
    model_file = path / MODEL_FILE
    info = read_info(path)
    config = config_from_dict(info["recipe"], origin=f"{model_file}: recipe")
    modality = modality_from_info(info, str(model_file))
    labels, members = list(info["labels"]), info.get("members", 1)
    try:
        check_network_size(modality, config.model.blocks, len(labels), members=members)
    except CnncliError as error:
        raise CnncliError(f"{model_file}: recipe: {error}") from None
    built = [network_for(modality, config.model.blocks, len(labels)) for _ in range(members)]
    network = built[0] if len(built) == 1 else Ensemble(built)
    network.load_state_dict(read_weights(path / WEIGHTS_FILE, network), strict=True)
    network.eval()
    if device is not None:
        network.to(device)
    return Bundle(path, config, labels, modality, network, info)


def modality_from_info(info: dict, where: str):
    """The fitted modality a checked model.json describes: its options checked against their schema,
    keys older versions wrote dropped, keys they did not write set as they were then, the rest of
    its state read by the modality itself."""
    name, state = info["modality"]["name"], info["modality"]["state"]
    if name not in MODALITIES:
        raise CnncliError(f"{where}: modality.name: unknown modality {name!r} (known: {', '.join(MODALITIES)})")
    modality_type = modality_class(name)
    if "options" in state:
        raw = {**modality_type.options_before_recorded, **{
            key: value for key, value in state["options"].items() if key not in modality_type.retired_options}} \
            if isinstance(state["options"], dict) else state["options"]
        options = build_typed(modality_type.options_type, raw, "modality.state.options", where)
        for key, message in modality_type.check_options(options):
            raise CnncliError(f"{where}: modality.state.options.{key}: {message}")
        state = {**state, "options": dataclasses.asdict(options)}
    try:
        modality = modality_type.from_state(state)
        shape = list(modality.input_shape)
    except CnncliError as error:
        raise CnncliError(f"{where}: {error}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise CnncliError(f"{where}: modality.state: not readable by the {name} modality "
                          f"({type(error).__name__}: {error})") from None
    if shape != info["input_shape"]:
        raise CnncliError(f"{where}: input_shape: {info['input_shape']} is not the {shape} its modality encodes")
    return modality


def read_weights(weights_file: Path, network) -> dict[str, torch.Tensor]:
    """The tensors of `weights_file` once their names and shapes are those of `network`'s
    (read from the header, before any tensor) and their values are finite numbers."""
    expected = {name: tuple(tensor.shape) for name, tensor in network.state_dict().items()}
    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            found = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (OSError, SafetensorError, ValueError) as error:
        raise CnncliError(f"{weights_file}: unreadable weights ({error})") from None
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        which = f"lacks the tensor {missing[0]}" if missing else f"holds an unexpected tensor {unexpected[0]}"
        raise CnncliError(f"{weights_file}: {which}; it does not match the recipe's network")
    for name, shape in expected.items():
        if found[name] != shape:
            raise CnncliError(f"{weights_file}: tensor {name} has shape {list(found[name])}; the recipe's network "
                              f"needs {list(shape)}")
    try:
        tensors = load_file(str(weights_file))
    except (OSError, SafetensorError, ValueError, RuntimeError) as error:
        raise CnncliError(f"{weights_file}: unreadable weights ({error})") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CnncliError(f"{weights_file}: tensor {name} holds values that are not finite (NaN or infinity)")
    return tensors


# ---------------------------------------------------------------------------------------------
# The resume state of a partial bundle

# Where and how fast a run goes (threads, device, decoding processes, memory), not what it computes.
RESUME_MAY_CHANGE = {"train.threads", "train.device", "data.workers", "data.in_memory", "data.memory_budget"}


def read_resume_state(path: str | Path, overrides: list[str] = ()) -> tuple[Any, TrainState]:
    """The recipe and training state saved in a partial bundle, for `train --resume`. Only where
    and how fast it runs may change (threads, device, decoding workers, memory)."""

    path = Path(path)
    info = read_info(path)
    if info["status"] == "complete":
        raise CnncliError(f"{path}: this run finished; there is nothing to resume")
    if not (path / STATE_FILE).exists() or not (path / TENSORS_FILE).exists():
        raise CnncliError(f"{path}: has no resume state ({STATE_FILE}); it was written by an older cnncli")
    saved = config_to_dict(config_from_dict(info["recipe"], origin=f"{path / MODEL_FILE}: recipe"))
    config = load_config(saved, list(overrides))
    changed = _changed_keys(config_to_dict(config), saved) - RESUME_MAY_CHANGE
    if changed:
        raise CnncliError(f"--set {sorted(changed)[0]}: cannot change when resuming (only "
                          f"{', '.join(sorted(RESUME_MAY_CHANGE))}); start a new run instead")
    try:
        tensors = load_file(str(path / TENSORS_FILE))
        text = (path / STATE_FILE).read_bytes().decode("utf-8")
    except (OSError, SafetensorError, UnicodeDecodeError, ValueError) as error:
        raise CnncliError(f"{path}: unreadable resume state ({error})") from None
    state = from_files(tensors, loads(text, str(path / STATE_FILE)), str(path / STATE_FILE))
    if not state.member < config.train.ensemble:
        raise CnncliError(f"{path / STATE_FILE}: member: {state.member} is past the recipe's "
                          f"{config.train.ensemble} ensemble member(s)")
    return config, state


def _changed_keys(new: dict, old: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key in set(new) | set(old):
        a, b, name = new.get(key), old.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            keys |= _changed_keys(a, b, f"{name}.")
        elif a != b:
            keys.add(name)
    return keys
