"""Modality registry: a recipe's `data.modality` name -> the class that preprocesses it.

Adding a modality is one new module and one line here. Modules are imported on first use so
that `cnncli --help` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cnncli.errors import CnncliError

if TYPE_CHECKING:
    from cnncli.modalities.base import Modality

REGISTRY = {
    "image": "cnncli.modalities.image:ImageModality",
    "audio": "cnncli.modalities.audio:AudioModality",
    "text": "cnncli.modalities.text:TextModality",
}


def modality_class(name: str) -> type["Modality"]:
    """The Modality subclass registered under `name`."""
    try:
        module_name, class_name = REGISTRY[name].split(":")
    except KeyError:
        raise CnncliError(f"data.modality: unknown modality {name!r} (known: {', '.join(REGISTRY)})") from None
    return getattr(importlib.import_module(module_name), class_name)
