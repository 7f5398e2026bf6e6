"""Recipes: YAML files plus `--set key=value` overrides, resolved into one typed, validated Config.

The schema is the dataclasses below, completed by the registries (`schema`): each registered
modality adds its `data.<name>` section and its `augment` keys, and names such as optimizers and
schedules are checked against their registry. Fields are the only keys a recipe may use, their
types decide how a `--set` value is read, and their defaults are what a resolved recipe prints.
Every error names the key and where it came from (the recipe file or `--set`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from cnncli.errors import CnncliError
from cnncli.modalities import MODALITIES
from cnncli.optim import OPTIMIZERS, SCHEDULES
from cnncli.ranges import check_values
from cnncli.recipe_yaml import parse_yaml, read_text

PathList = Union[str, list[str]]


@dataclass
class SplitConfig:
    """How samples become train / val / test when no separate source is given for a part."""

    test_fraction: float = 0.2  # share of samples for test when there is no test source or rule
    val_fraction: float = 0.1  # share of the training part held out for validation (0 = none)
    test_pattern: str | None = None  # regex searched in the file name: matches go to test
    test_every: int | None = None  # position % test_every == test_offset goes to test (position in its file)
    test_offset: int = 0  # which of the test_every folds is test: 0..test_every-1 (cross-validation)
    test_range: list[int] | None = None  # [start, end): positions in this range go to test
    seed: int = 0  # seeds the random fractions; the split is recorded in the bundle
    # regex searched in the file name, its first group (or whole match) naming the sample's group (a
    # speaker, a session): the seeded fractions and rotate_val's folds then hold out whole groups
    group_regex: str | None = None


@dataclass
class DataConfig:
    """Where samples come from, how they are labelled and split, and how they become tensors."""

    modality: str = field(default="image", metadata={"choices": MODALITIES})
    root: str = "."  # train/val/test paths are relative to this (itself relative to the recipe)
    train: PathList = "."  # a folder, manifest, idx file or text file(s); globs allowed
    val: PathList | None = None
    test: PathList | None = None
    format: Literal["auto", "folder", "files", "manifest", "idx", "lines", "labelled_lines"] = "auto"
    label_regex: str | None = None  # first group of a match in the file name is the label
    path_column: str = "path"
    label_column: str = "label"
    text_column: str = "text"
    encoding: str = "utf-8"
    split: SplitConfig = field(default_factory=SplitConfig)
    in_memory: Union[bool, Literal["auto"]] = "auto"  # hold decoded splits in memory; auto: unless over memory_budget
    memory_budget: float | None = None  # GB the encoded splits may take in memory; None = half of what is available
    workers: int | None = None  # processes decoding files (up front or streaming); None = one per core, at most 8
    # + one section per registered modality, `data.<name>` (see `schema`)


@dataclass
class ModelConfig:
    """The shared backbone as a list of block specs; the classifier layer is appended for you."""

    blocks: list[Any] = field(default_factory=list)


@dataclass
class TrainConfig:
    epochs: int = 10
    steps: int | None = None  # when set, train this many optimiser steps instead of `epochs`
    batch_size: int = 64
    eval_batch_size: int = 512
    optimizer: str = field(default="adam", metadata={"choices": OPTIMIZERS})
    lr: float = 0.001
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: str = field(default="constant", metadata={"choices": SCHEDULES})
    lr_min: float = 0.0  # floor of the exponential and cosine schedules
    decay_steps: float = 2000.0  # exponential: lr_min + (lr - lr_min) * exp(-step / decay_steps)
    label_smoothing: float = 0.0
    mixup: float = 0.0  # alpha of mixup: each batch blended with a shuffled copy by a Beta(alpha, alpha) weight; 0 = off
    max_norm: float | None = None  # clip each output unit's weight norm of the last layer (Kim)
    ensemble: int = 1  # train this many networks (seeds seed, seed+1000, ...) and average their probabilities
    rotate_val: bool = False  # member i validates on its own fold (data.val joins the training data): all data trains
    auto_members: int = 1  # augment: auto judges each candidate by this many members, each on its own fold
    ema: float | None = None  # decay of a moving average of the weights (e.g. 0.999), used to validate and keep
    keep: Literal["best", "last"] = "best"  # best on validation, or the last epoch's weights
    calibrate: bool = True  # fit a temperature on validation (rotate_val: out-of-fold rows): scores match accuracy
    early_stopping: int | None = None  # stop after this many epochs without a better val loss
    seed: int = 0
    device: str = "auto"  # auto = cuda when present, else cpu
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto = bf16 (older GPUs: fp16) on CUDA, fp32 on CPU
    sync_batch_norm: bool = False  # under torchrun on GPUs: batch norm statistics over the whole global batch
    threads: int | None = None  # CPU threads for torch; None = torch's default


@dataclass
class AugmentConfig:
    """Training-time randomness; never applied at evaluation or prediction. Its keys are those
    of every registered modality (see `schema`); a recipe may set only its own modality's."""

    auto: bool = False  # `augment: auto`: validation chooses them among the modality's candidates (autotune.py)


@dataclass
class Config:
    """One resolved recipe: everything `train` needs, printed back in full in the bundle."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    description: str = ""


# ---------------------------------------------------------------------------------------------
# The schema the registered modalities complete

_SCHEMA: dict[int, type] = {}


def schema() -> type[Config]:
    """Config with a `data.<name>` section per registered modality and the union of their augment
    keys (rebuilt when a modality is registered). A key two modalities share must agree on its
    type and default, since a recipe's `augment` section has one value per key."""
    if MODALITIES.version not in _SCHEMA:
        classes = [modality for _, modality in MODALITIES.items()]
        data = dataclasses.make_dataclass("DataConfig", [
            (modality.name, modality.options_type, field(default_factory=modality.options_type))
            for modality in classes], bases=(DataConfig,))
        augment_fields: dict[str, tuple] = {}
        for modality in classes:
            hints = typing.get_type_hints(modality.augment_type)
            for item in dataclasses.fields(modality.augment_type):
                entry = (item.name, hints[item.name], field(default=item.default))
                known = augment_fields.setdefault(item.name, entry)
                if (known[1], known[2].default) != (entry[1], item.default):
                    raise TypeError(f"augment.{item.name}: modalities disagree on its type or default")
        augment = dataclasses.make_dataclass("AugmentConfig", list(augment_fields.values()), bases=(AugmentConfig,))
        _SCHEMA.clear()
        _SCHEMA[MODALITIES.version] = dataclasses.make_dataclass("Config", [
            ("data", data, field(default_factory=data)),
            ("augment", augment, field(default_factory=augment))], bases=(Config,))
    return _SCHEMA[MODALITIES.version]


# ---------------------------------------------------------------------------------------------
# Reading and checking


def load_config(source: str | Path | dict, overrides: list[str] = ()) -> Config:
    """Read a recipe file (or dict), apply `key=value` overrides, and validate the result.

    Relative `data.root` in a recipe file is resolved against the recipe's folder, so a recipe
    works from any working directory; a `--set data.root` is taken relative to where you are.
    """
    if isinstance(source, dict):
        raw, origin, base = copy.deepcopy(source), "recipe", Path.cwd()  # overrides must not touch the caller's dict
    else:
        path = Path(source)
        origin, base = str(path), path.resolve().parent
        raw = parse_yaml(read_text(path), str(path)) or {}
    if not isinstance(raw, dict):
        raise CnncliError(f"{origin}: a recipe must be a mapping with sections data, model, train, augment")
    drop_retired_keys(raw)
    root = raw.get("data", {}).get("root") if isinstance(raw.get("data"), dict) else None
    if isinstance(root, str) and not Path(root).expanduser().is_absolute():
        raw.setdefault("data", {})["root"] = str(base / root)
    for override in [None, *overrides]:
        if override is not None:
            apply_override(raw, override)
        if raw.get("augment") == "auto":  # `augment: auto` is short for `augment: {auto: true}`
            raw["augment"] = {"auto": True}
    config = _build(schema(), raw, "", origin)
    check_values(config, origin)
    return config


def drop_retired_keys(raw: dict) -> None:
    """Remove the `data.<name>` keys older versions wrote and no longer read (Modality.retired_options),
    so old recipes and bundles still load."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for name, modality in MODALITIES.items():
        if isinstance(data.get(name), dict):
            for key in modality.retired_options:
                data[name].pop(key, None)


def apply_override(raw: dict, override: str) -> None:
    """Set one `a.b.c=value` in a raw recipe dict; the value is read as the schema's type says."""
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
                raise CnncliError(f"--set {key}: {where} is not an item of the list ({len(node)} items)")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise CnncliError(f"--set {key}: {'.'.join(parts[:depth])} is not a section")
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
            raise CnncliError(f"{where}: expected one of {', '.join(map(str, allowed))}; got {_show(value)}")
        return value
    if origin_type is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise CnncliError(f"{where}: expected a list, got {_show(value)}")
        return [_build(item_type, item, f"{key}[{i}]", origin) for i, item in enumerate(value)]
    if origin_type is dict:
        if not isinstance(value, dict):
            raise CnncliError(f"{where}: expected a mapping, got {_show(value)}")
        return value
    if value is None:
        raise CnncliError(f"{where}: a value is required")
    return _build_scalar(tp, value, where)


def _build_section(tp: Any, value: Any, key: str, origin: str) -> Any:
    """A dataclass from a mapping: unknown keys are errors, names are checked against registries."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise CnncliError(f"{origin}: {key or 'recipe'}: expected a section (mapping), got {_show(value)}")
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
            raise CnncliError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CnncliError(f"{where}: expected a whole number, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, str):
            value = _yaml11_float(value)  # PyYAML reads 1e-3 (no dot) as text
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CnncliError(f"{where}: expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if not math.isfinite(number):
            raise CnncliError(f"{where}: expected a finite number, got {_show(value)}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise CnncliError(f"{where}: expected text, got {_show(value)}")
        return str(value)
    raise TypeError(f"schema type {tp} is not supported")  # a bug in the schema, not user input


def config_to_dict(config: Config) -> dict:
    """The fully resolved recipe as plain data (what the bundle stores and `--resolved` prints)."""
    return dataclasses.asdict(config)


def config_from_dict(data: dict, origin: str = "bundle") -> Config:
    """Rebuild a Config from `config_to_dict` output (e.g. the recipe stored in a bundle), checked
    like a recipe file."""
    if not isinstance(data, dict):
        raise CnncliError(f"{origin}: expected the recipe as a mapping, got {_show(data)}")
    data = copy.deepcopy(data)
    drop_retired_keys(data)
    config = _build(schema(), data, "", origin)
    check_values(config, origin)
    return config


def build_typed(tp: Any, value: Any, key: str, origin: str) -> Any:
    """Plain data -> the schema type `tp` (e.g. a modality's options dataclass stored in a bundle),
    checked as a recipe section is: errors name `key` and `origin`."""
    return _build(tp, value, key, origin)


def _yaml11_float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
