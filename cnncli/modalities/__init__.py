"""Modalities: a recipe's `data.modality` name -> the Modality class that preprocesses it.

Everything modality-specific lives below this package; the core names no modality. Adding one is
a module with a Modality subclass (cnncli.modalities.base) and one `MODALITIES.register` line,
here or in the user's own code. Modules are imported on first use so that `cnncli --help` stays
light.
"""

from __future__ import annotations

from typing import Any

from cnncli.registry import Registry

MODALITIES = Registry("modality", "data.modality")
MODALITIES.register("image", "cnncli.modalities.image:ImageModality")
MODALITIES.register("audio", "cnncli.modalities.audio:AudioModality")
MODALITIES.register("text", "cnncli.modalities.text:TextModality")


def modality_class(name: str) -> Any:
    """The Modality subclass registered under `name` (an unknown name lists the known ones)."""
    return MODALITIES.get(name)
