"""The search space of `cnncli tune`: a recipe's `tune:` section, read into dimensions to sample.

    tune:
      train.lr: {log: [1e-4, 1e-2]}           # a number, uniform on a log scale
      train.label_smoothing: {uniform: [0, 0.2]}
      train.batch_size: {int: [16, 64]}        # a whole number, both ends included
      train.mixup: [0, 0.2]                    # one of these values
      model.blocks: [[...], [...]]             # a choice may be a whole list or section

Keys are recipe keys as `--set` names them; a nested mapping is read as dotted keys, so
`--set tune.train.lr='{log: [1e-4, 1e-2]}'` works too. A recipe without the section searches its
modality's space (Modality.tune_space), else the general one below. Every key is checked before
any trial runs, by reading the recipe with each end of its range and each of its choices: a
typo, a bound out of range or a choice the schema refuses is one error naming the key.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from cnncli.errors import CnncliError
from cnncli.recipe.config import config_from_dict
from cnncli.recipe.keys import get_key, set_key
from cnncli.recipe.typed import show

# Training keys every modality has: the rate (by far the most telling), regularisation and mixup.
GENERAL_SPACE = {
    "train.lr": {"log": [3e-4, 1e-2]},
    "train.weight_decay": [0.0, 1e-4, 1e-2],
    "train.label_smoothing": {"uniform": [0.0, 0.15]},
    "train.mixup": [0.0, 0.2],
}
RANGES = ("log", "uniform", "int")


@dataclass(frozen=True)
class Dimension:
    """One recipe key and the values a trial may give it."""

    key: str
    kind: str  # log, uniform, int, or choice
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        """This key's value in an Optuna trial. Choices that are not plain scalars (a list of
        blocks) are offered to Optuna by their position, which its storage can hold."""
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        if self.kind != "choice":
            return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "log")
        if all(is_scalar(choice) for choice in self.choices):
            return trial.suggest_categorical(self.key, list(self.choices))
        return self.choices[trial.suggest_categorical(self.key, list(range(len(self.choices))))]

    def stored(self, value: Any) -> Any:
        """`value` as Optuna stores it for this key (the position of a choice that is no scalar)."""
        if self.kind == "choice" and not all(is_scalar(choice) for choice in self.choices):
            return self.choices.index(value)
        return value

    def holds(self, value: Any) -> bool:
        """Whether `value` (a recipe's own) lies in this dimension."""
        if self.kind == "choice":
            return value in self.choices
        return is_number(value) and self.low <= value <= self.high and (self.kind != "int" or value == int(value))

    def extremes(self) -> list:
        """The values the check reads the recipe with: both ends, or every choice."""
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def yaml11_number(value: Any) -> Any:
    """1e-3 as a number: PyYAML reads an exponent without a dot as text (the schema's floats do the same)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def dotted(section: dict, prefix: str = "") -> dict[str, Any]:
    """{"train.lr": spec}: nested mappings opened up to the first value that is a spec."""
    found: dict[str, Any] = {}
    for name, value in section.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and not set(value) & set(RANGES):
            found.update(dotted(value, key + "."))
        else:
            found[key] = value
    return found


def read_dimension(key: str, spec: Any, origin: str) -> Dimension:
    """One key's spec -> a Dimension; a malformed one is an error naming `tune.KEY`."""
    where = f"{origin}: tune.{key}"
    if isinstance(spec, list):
        if len(spec) < 2:
            raise CnncliError(f"{where}: a list of choices needs at least two, got {show(spec)}")
        return Dimension(key, "choice", choices=tuple(spec))
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in RANGES:
        raise CnncliError(f"{where}: expected {{log: [low, high]}}, {{uniform: [low, high]}}, {{int: [low, high]}} "
                          f"or a list of choices, got {show(spec)}")
    kind, bounds = next(iter(spec.items()))
    if isinstance(bounds, list):
        bounds = [yaml11_number(bound) for bound in bounds]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(is_number(bound) for bound in bounds)):
        raise CnncliError(f"{where}: {kind} needs [low, high], two numbers")
    low, high = bounds
    if not low < high:
        raise CnncliError(f"{where}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "log" and low <= 0:
        raise CnncliError(f"{where}: log needs a positive low end, got {low}")
    if kind == "int" and not (low == int(low) and high == int(high)):
        raise CnncliError(f"{where}: int needs whole numbers, got [{low}, {high}]")
    return Dimension(key, kind, float(low), float(high))


def read_space(section: dict, recipe: dict, origin: str) -> list[Dimension]:
    """The dimensions of a `tune:` section, each checked against the resolved `recipe` (a dict)."""
    if not isinstance(section, dict) or not section:
        raise CnncliError(f"{origin}: tune: expected a mapping of recipe keys to ranges or choices")
    dimensions = [read_dimension(key, spec, origin) for key, spec in dotted(section).items()]
    for dimension in dimensions:
        try:
            get_key(recipe, dimension.key)
        except CnncliError as error:
            raise CnncliError(f"{origin}: tune.{error}") from None
        for value in dimension.extremes():
            try:
                trial_recipe(recipe, {dimension.key: value}, "the recipe")
            except CnncliError as error:
                raise CnncliError(f"{origin}: tune.{dimension.key}: {show(value)} does not make a valid recipe "
                                  f"({error})") from None
    return dimensions


def trial_recipe(recipe: dict, values: dict[str, Any], origin: str):
    """The resolved recipe with `values` set (and no tune section of its own), as a checked Config."""
    changed = copy.deepcopy(recipe)
    changed["tune"] = {}
    for key, value in values.items():
        set_key(changed, key, value)
    return config_from_dict(changed, origin)
