"""Named choices, one registry per family (modalities, optimizers, schedules, output formats, ...).

A recipe or a flag names a choice; the registry is the only list of what exists, so the schema
that checks a recipe, the code that builds the thing and the error for an unknown name can never
disagree (timm's optimizer factory works the same way). Entries may be given as "module:attr"
strings, imported on first use, so that registering costs nothing at `cnncli --help` time.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from cnncli.errors import CnncliError


class Registry:
    """Names -> entries for one family; `get` of an unknown name is a CnncliError listing the known ones."""

    def __init__(self, family: str, key: str):
        self.family = family  # what the names are, for messages: "optimizer"
        self.key = key  # where users write them, for messages: "train.optimizer"
        self._entries: dict[str, Any] = {}
        self.version = 0  # bumped on every change, so what is derived from the registry can be rebuilt

    def register(self, name: str, entry: Any = None) -> Any:
        """Add `entry` under `name` (a later registration replaces an earlier one); without
        `entry`, return a decorator that registers what it decorates."""
        if entry is None:
            return lambda target: self.register(name, target)
        self._entries[name] = entry
        self.version += 1
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self.version += 1

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def check(self, name: Any, key: str | None = None) -> str:
        """`name` if it is registered; otherwise one line naming the key and every valid name."""
        if not isinstance(name, str) or name not in self._entries:
            raise CnncliError(f"{key or self.key}: unknown {self.family} {name!r} (known: {', '.join(self._entries)})")
        return name

    def get(self, name: Any, key: str | None = None) -> Any:
        """The entry registered under `name`, imported if it was registered as 'module:attr'."""
        entry = self._entries[self.check(name, key)]
        if isinstance(entry, str):
            module_name, _, attribute = entry.partition(":")
            entry = getattr(importlib.import_module(module_name), attribute)
            self._entries[name] = entry
        return entry

    def items(self) -> Iterator[tuple[str, Any]]:
        for name in list(self._entries):
            yield name, self.get(name)

