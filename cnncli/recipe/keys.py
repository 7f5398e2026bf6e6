"""A recipe's dotted keys (`train.lr`, `data.image.size`): every key of a resolved recipe with its
value, and one value set in a recipe. What `cnncli tune` varies, what `compare` lines up and
what a tracker logs as a run's parameters are all named this way, as `--set` names them."""

from __future__ import annotations

from typing import Any

from cnncli.errors import CnncliError


def flat_keys(recipe: dict, prefix: str = "") -> dict[str, Any]:
    """{"train.lr": 0.001, "model.blocks": [...], ...}: sections are opened, lists are values."""
    found: dict[str, Any] = {}
    for name, value in recipe.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            found.update(flat_keys(value, key + "."))
        else:
            found[key] = value
    return found


def get_key(recipe: dict, key: str) -> Any:
    """The value of `key` in a resolved recipe (an item of a list by its number: `model.blocks.0.conv`)."""
    node, place = _locate(recipe, key)
    return node[place]


def set_key(recipe: dict, key: str, value: Any) -> None:
    """Set the existing key `key` of a resolved recipe to `value`."""
    node, place = _locate(recipe, key)
    node[place] = value


def _locate(recipe: dict, key: str) -> tuple[Any, Any]:
    """(the section or list that holds `key`, its name or number there); a key the recipe does
    not have is a CnncliError naming it."""
    parts = key.split(".")
    node: Any = recipe
    for depth, part in enumerate(parts):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            place: Any = int(part)
        elif isinstance(node, dict) and part in node:
            place = part
        else:
            raise CnncliError(f"{key}: not a key of the recipe (`cnncli inspect RECIPE --resolved` lists them)")
        if depth < len(parts) - 1:
            node = node[place]
    return node, place
