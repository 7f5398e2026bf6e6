"""Plain data (YAML, JSON) -> the schema's typed dataclasses, checked as it is built.

Unknown keys, wrong types, non-finite numbers and names missing from their registry are one
CnncliError naming the key and where the value came from (a recipe file, `--set`, a bundle).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

from cnncli.errors import CnncliError


def build_typed(tp: Any, value: Any, key: str, origin: str) -> Any:
    """Plain data -> the schema type `tp` (e.g. a modality's options dataclass stored in a bundle),
    checked as a recipe section is: errors name `key` and `origin`."""
    return _build(tp, value, key, origin)


def _build(tp: Any, value: Any, key: str, origin: str) -> Any:
    """Turn raw YAML data into the schema type `tp`, or raise naming `key` and `origin`."""
    if dataclasses.is_dataclass(tp):
        return _build_section(tp, value, key, origin)
    where = f"{origin}: {key or 'recipe'}"
    if tp is Any:
        return value
    origin_type = typing.get_origin(tp)
    if origin_type in (Union, types.UnionType):
        return _build_union(tp, value, key, origin)
    if origin_type is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise CnncliError(f"{where}: expected one of {', '.join(map(str, allowed))}; got {show(value)}")
        return value
    if origin_type is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise CnncliError(f"{where}: expected a list, got {show(value)}")
        return [_build(item_type, item, f"{key}[{i}]", origin) for i, item in enumerate(value)]
    if origin_type is dict:
        if not isinstance(value, dict):
            raise CnncliError(f"{where}: expected a mapping, got {show(value)}")
        return value
    if value is None:
        raise CnncliError(f"{where}: a value is required")
    return _build_scalar(tp, value, where)


def _build_section(tp: Any, value: Any, key: str, origin: str) -> Any:
    """A dataclass from a mapping: unknown keys are errors, names are checked against registries."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise CnncliError(f"{origin}: {key or 'recipe'}: expected a section (mapping), got {show(value)}")
    hints = typing.get_type_hints(tp)
    unknown = [name for name in value if name not in hints]
    if unknown:
        raise CnncliError(f"{origin}: {_join(key, unknown[0])}: unknown key (known here: {', '.join(hints)})")
    registries = {item.name: item.metadata["choices"] for item in dataclasses.fields(tp) if "choices" in item.metadata}
    kwargs = {}
    for name, item in value.items():
        kwargs[name] = _build(hints[name], item, _join(key, name), origin)
        if name in registries:
            registries[name].check(kwargs[name], f"{origin}: {_join(key, name)}")
    return tp(**kwargs)


def _build_union(tp: Any, value: Any, key: str, origin: str) -> Any:
    options = typing.get_args(tp)
    if value is None:
        if type(None) in options:
            return None
        raise CnncliError(f"{origin}: {key or 'recipe'}: a value is required")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _build(option, value, key, origin)
        except CnncliError as error:
            errors.append(error)
    raise errors[-1]


def _build_scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise CnncliError(f"{where}: expected true or false, got {show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CnncliError(f"{where}: expected a whole number, got {show(value)}")
        return value
    if tp is float:
        if isinstance(value, str):
            value = _yaml11_float(value)  # PyYAML reads 1e-3 (no dot) as text
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CnncliError(f"{where}: expected a number, got {show(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if not math.isfinite(number):
            raise CnncliError(f"{where}: expected a finite number, got {show(value)}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise CnncliError(f"{where}: expected text, got {show(value)}")
        return str(value)
    raise TypeError(f"schema type {tp} is not supported")  # a bug in the schema, not user input


def _yaml11_float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
