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

model.json records the sha256 of the weights it was written with (`weights_sha256`), and the
weights are read once, checked against it, then used: a weights file with a byte changed, or one
of another version of the bundle (read while the bundle was being replaced, or copied over it),
is refused naming the bundle. Bundles written before the digest was recorded have nothing to check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save_file

from cnncli import __version__
from cnncli.bundle.resume_state import STATE_FILE, TENSORS_FILE, TrainState, from_files
from cnncli.bundle.schema import FORMAT, FORMAT_VERSION, check_info
from cnncli.errors import CnncliError
from cnncli.files.atomic import give_umask_permissions, staged_folder
from cnncli.files.jsontext import dumps, loads
from cnncli.files.reading import read_limited
from cnncli.limits import MAX_PARAMETERS, MAX_RECIPE_BYTES
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
    weights_sha256: str = ""  # of the weights file as read

    @property
    def temperature(self) -> float:
        """The calibration temperature training fitted; 1.0 (scores as they were) when it has none."""
        return float((self.info.get("calibration") or {}).get("temperature") or 1.0)

    @property
    def digest(self) -> str:
        """One sha256 for model.json and the weights together: what tells this bundle from another
        (or from itself retrained), e.g. for `predict --resume`."""
        content = dumps(self.info, str(self.path / MODEL_FILE), sort_keys=True) + self.weights_sha256
        return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


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
        try:
            save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": FORMAT})
        except SafetensorError as error:  # a full disk: the OS error it reports, for staged_folder to say so
            raise system_error(error, staging / WEIGHTS_FILE) from None
        give_umask_permissions(staging / WEIGHTS_FILE)
        info["weights_sha256"] = file_sha256(staging / WEIGHTS_FILE)
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
        check_network_size(modality, config.model, len(labels), members=members)
    except CnncliError as error:
        raise CnncliError(f"{model_file}: recipe: {error}") from None
    built = [network_for(modality, config.model, len(labels)) for _ in range(members)]
    network = built[0] if len(built) == 1 else Ensemble(built)
    tensors, digest = read_weights(path / WEIGHTS_FILE, network, info.get("weights_sha256"))
    network.load_state_dict(tensors, strict=True)
    network.eval()
    if device is not None:
        network.to(device)
    return Bundle(path, config, labels, modality, network, info, digest)


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


MAX_WEIGHTS_BYTES = 8 * MAX_PARAMETERS + MAX_RECIPE_BYTES  # float64 at the parameter limit, and a header


def read_weights(weights_file: Path, network, expected_sha256: str | None = None) -> tuple[dict, str]:
    """The tensors of `weights_file` and its sha256, once that is `expected_sha256` (None: nothing
    recorded), their names and shapes are those of `network`'s (read from the header, before any
    tensor) and their values are finite numbers. The file is read once: what is checked is what is used."""
    content = read_limited(weights_file, MAX_WEIGHTS_BYTES, "cnncli bundle's weights")  # a regular file: no FIFO
    digest = hashlib.sha256(content).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise CnncliError(f"{weights_file.parent}: {weights_file.name} is not the file {MODEL_FILE} was written with "
                          f"(sha256 {digest[:12]}..., recorded {expected_sha256[:12]}...): damaged, or of another "
                          "version of the bundle; copy it whole again, or train it again")
    expected = {name: tuple(tensor.shape) for name, tensor in network.state_dict().items()}
    found = _header_shapes(content, weights_file)
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        which = f"lacks the tensor {missing[0]}" if missing else f"holds an unexpected tensor {unexpected[0]}"
        raise CnncliError(f"{weights_file}: {which}; it does not match the recipe's network")
    for name, shape in expected.items():
        if found[name] != shape:
            raise CnncliError(f"{weights_file}: tensor {name} has shape {list(found[name])}; the recipe's network "
                              f"needs {list(shape)}")
    try:
        tensors = load(content)
    except (OSError, SafetensorError, ValueError, RuntimeError) as error:
        raise CnncliError(f"{weights_file}: unreadable weights ({error})") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CnncliError(f"{weights_file}: tensor {name} holds values that are not finite (NaN or infinity)")
    return tensors, digest


def _header_shapes(content: bytes, weights_file: Path) -> dict[str, tuple]:
    """{name: shape} from a safetensors header (8 bytes of length, then JSON), before any tensor is made."""
    length = int.from_bytes(content[:8], "little")
    try:
        header = json.loads(content[8:8 + length]) if len(content) >= 8 and 8 + length <= len(content) else None
        return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise CnncliError(f"{weights_file}: unreadable weights (not a safetensors header)") from None


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def system_error(error: SafetensorError, path: Path) -> Exception:
    """safetensors' writer reports a refused write as text ('... No space left on device (os error
    28)'): the OSError it was, naming `path`; other errors as they are."""
    match = re.search(r"\(os error (\d+)\)", str(error))
    if not match:
        return error
    code = int(match.group(1))
    return OSError(code, os.strerror(code), str(path))


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
