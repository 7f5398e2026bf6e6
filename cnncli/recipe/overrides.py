"""`--set key=value`: one value set in a raw recipe, read as the schema's type for that key says."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Union

from cnncli.errors import CnncliError
from cnncli.modalities import MODALITIES
from cnncli.recipe.safe_yaml import parse_yaml
from cnncli.recipe.schema import schema


def apply_override(raw: dict, override: str, origin: str = "the recipe") -> None:
    """Set one `a.b.c=value` in a raw recipe dict (read from `origin`); the value is read as the
    schema's type says."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CnncliError(f"--set {override!r}: expected key=value, e.g. --set train.epochs=3")
    parts = key.split(".")
    expected = _type_at(parts)
    if expected is None and len(parts) == 3 and parts[0] == "data" and parts[1] in MODALITIES:
        retired = MODALITIES.get(parts[1]).retired_options.get(parts[2])
        if retired:
            raise CnncliError(f"--set {key}: no longer a recipe key; {retired}")
    if expected is None:
        raise CnncliError(f"--set {key}: unknown key (see `cnncli inspect RECIPE --resolved` for every key)")
    stripped = text.strip()
    if _accepts_str(expected) and stripped not in ("null", "~") and stripped[:1] not in ("[", "{"):
        value: Any = text  # text fields keep what was typed: '007' stays '007'
    else:
        value = _parse_scalar(text, key)
    node: Any = raw
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise CnncliError(f"--set {key}: {where} is not an item of the list in {origin} ({len(node)} items)")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise CnncliError(f"--set {key}: {'.'.join(parts[:depth])} in {origin} is not a section")
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
    if key == "data.root" and isinstance(value, str):
        raw["data"]["root"] = str(Path(value).expanduser().resolve())


_ANY_PATH = object()


def _type_at(parts: list[str]) -> Any:
    """The declared type of a dotted key, _ANY_PATH inside free-form lists/dicts, None if unknown."""
    current: Any = schema()
    for index, part in enumerate(parts):
        if dataclasses.is_dataclass(current):
            hints = typing.get_type_hints(current)
            if part not in hints:
                return None
            current = hints[part]
        elif typing.get_origin(current) in (list, dict) or current is Any:
            return _ANY_PATH if index < len(parts) else current
        else:
            return None
    return current


def _accepts_str(tp: Any) -> bool:
    if tp is str:
        return True
    return typing.get_origin(tp) in (Union, types.UnionType) and str in typing.get_args(tp)


def _parse_scalar(text: str, key: str) -> Any:
    return parse_yaml(text, f"--set {key}")
