"""What a bundle's model.json must hold, checked whole before anything is built from it.

A bundle may come from anywhere (a colleague, a download, a disk that failed), so every key is
checked for its type and a sane range first: one line naming the file and the key, instead of a
traceback or a hang (`"members": 10000000`) halfway through building a network. The recipe inside
is checked like any recipe (cnncli.recipe.config); the modality's state by its options' schema and the
modality itself; the weights against the network they must fill (cnncli.bundle.io).
"""

from __future__ import annotations

import math
import re
from typing import Any

from cnncli.errors import CnncliError
from cnncli.limits import MAX_INPUT_VALUES, MAX_LABELS, MAX_MEMBERS
from cnncli.nn.calibration import HIGHEST, LOWEST

FORMAT = "cnncli-bundle"
FORMAT_VERSION = 1
STATUSES = ("partial", "complete")
REQUIRED = {"format": str, "format_version": int, "status": str, "labels": list, "input_shape": list,
            "modality": dict, "recipe": dict}
OPTIONAL = {"members": int, "split": dict, "metrics": dict, "training": dict, "seed": int, "versions": dict,
            "calibration": dict, "weights_sha256": str}  # (no digest in bundles written before it was recorded)
TYPE_NAMES = {str: "text", int: "a whole number", list: "a list", dict: "an object"}


def check_info(info: Any, where: str) -> dict:
    """`info` (a parsed model.json) if it is a bundle this cnncli can load; else one CnncliError
    naming `where` and the key at fault."""
    if not isinstance(info, dict):
        raise CnncliError(f"{where}: expected a JSON object, got {_kind(info)}")
    if info.get("format") != FORMAT:
        raise CnncliError(f"{where}: not a cnncli bundle (format is {_short(info.get('format'))})")
    for key, expected in {**REQUIRED, **OPTIONAL}.items():
        if key not in info:
            if key in REQUIRED:
                raise CnncliError(f"{where}: {key}: missing")
            continue
        value = info[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise CnncliError(f"{where}: {key}: expected {TYPE_NAMES[expected]}, got {_kind(value)}")
    unknown = sorted(set(info) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise CnncliError(f"{where}: {unknown[0]}: unknown key (known: {', '.join([*REQUIRED, *OPTIONAL])})")
    version = info["format_version"]
    if version > FORMAT_VERSION:
        raise CnncliError(f"{where}: made by a newer cnncli (bundle format {version}); upgrade cnncli")
    if version < 1:
        raise CnncliError(f"{where}: format_version: expected 1 to {FORMAT_VERSION}, got {version}")
    if info["status"] not in STATUSES:
        raise CnncliError(f"{where}: status: expected {' or '.join(STATUSES)}, got {_short(info['status'])}")
    _check_labels(info["labels"], where)
    _check_shape(info["input_shape"], where)
    members = info.get("members", 1)
    if not 1 <= members <= MAX_MEMBERS:
        raise CnncliError(f"{where}: members: expected 1 to {MAX_MEMBERS}, got {members:,}")
    if "calibration" in info:
        _check_temperature(info["calibration"].get("temperature"), where)
    if "weights_sha256" in info and not re.fullmatch(r"[0-9a-f]{64}", info["weights_sha256"]):
        raise CnncliError(f"{where}: weights_sha256: expected 64 hexadecimal digits, got "
                          f"{_short(info['weights_sha256'])}")
    modality = info["modality"]
    if set(modality) != {"name", "state"} or not isinstance(modality["name"], str) \
            or not isinstance(modality["state"], dict):
        raise CnncliError(f"{where}: modality: expected {{\"name\": text, \"state\": object}}")
    return info


def _check_temperature(temperature: Any, where: str) -> None:
    """The number predict and eval divide the outputs by: one that training's fit can give."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not LOWEST <= temperature <= HIGHEST:
        raise CnncliError(f"{where}: calibration.temperature: expected a number from {LOWEST} to {HIGHEST:g}, "
                          f"got {_kind(temperature)}")


def _check_labels(labels: list, where: str) -> None:
    if not 2 <= len(labels) <= MAX_LABELS:
        raise CnncliError(f"{where}: labels: expected 2 to {MAX_LABELS:,} labels, got {len(labels):,}")
    if not all(isinstance(label, str) and label for label in labels):
        raise CnncliError(f"{where}: labels: expected a list of non-empty texts")
    if len(set(labels)) != len(labels):
        raise CnncliError(f"{where}: labels: a label is listed twice")


def _check_shape(shape: list, where: str) -> None:
    if not 1 <= len(shape) <= 4 or not all(isinstance(size, int) and not isinstance(size, bool) and size >= 1
                                           for size in shape):
        raise CnncliError(f"{where}: input_shape: expected 1 to 4 whole numbers >= 1, got {_short(shape)}")
    if math.prod(shape) > MAX_INPUT_VALUES:
        raise CnncliError(f"{where}: input_shape: {shape} holds more than the {MAX_INPUT_VALUES:,} values an "
                          "input may have")


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null",
             int: "a number", float: "a number"}
    return f"{names.get(type(value), type(value).__name__)} {_short(value)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
