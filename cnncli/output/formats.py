"""What an output format is, and the registry of them: the one place --format's names, checks,
help, --output's suffixes and --resume's choices are read from.

A format is one entry; registering one (even from outside cnncli) makes `--format NAME` work for
the verbs it can write, `-o FILE.SUFFIX` pick it, and --resume accept it if it can read its rows back.
The built-in ones (table, json, csv, jsonl) are registered in cnncli/output/__init__.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cnncli.errors import CnncliError
from cnncli.registry import Registry

FILE_FALLBACK = "csv"  # rows written to a file whose suffix names no format


@dataclass(frozen=True)
class OutputFormat:
    """One output format. `write_result(kind, result, stream)` prints one verb's result (kind:
    training, evaluation, inspection, ...); `write_rows(batches, stream, layout)` streams prediction
    rows, flushing each batch; `read_back(path, text, layout, key)` reads the rows an interrupted
    run wrote, for --resume, as (Finished, ends) where ends[i] is where the text after i whole rows
    starts (see cnncli.output.resume). None: the format cannot do that. `suffixes` (".csv") make
    `-o FILE` pick it; `rows_note` ("one array") follows its name in predict's --format help."""

    write_result: Callable[[str, dict, Any], None] | None = None
    write_rows: Callable[..., None] | None = None
    read_back: Callable[..., Any] | None = None
    suffixes: tuple[str, ...] = ()
    rows_note: str = ""

    @property
    def resumable(self) -> bool:
        """Whether a run can append to a file of these rows and a rerun can read them back."""
        return self.write_rows is not None and self.read_back is not None


FORMATS = Registry("output format", "--format")


def usable(rows: bool = False) -> tuple[str, ...]:
    """The formats that write prediction rows (`rows`) or one result object, in registration order."""
    return tuple(name for name, entry in FORMATS.items()
                 if (entry.write_rows if rows else entry.write_result) is not None)


def resumable() -> tuple[str, ...]:
    """The formats whose rows --resume can append to."""
    return tuple(name for name, entry in FORMATS.items() if entry.resumable)


def check_format(name: str, rows: bool = False) -> str:
    """`name` if it is a format this kind of output can be written in; else one line that lists them."""
    FORMATS.check(name)
    choices = usable(rows)
    if name not in choices:
        raise CnncliError(f"--format {name}: not available here (use {', '.join(choices)})")
    return name


def format_of_file(path: str) -> str:
    """The row format a file name asks for by its suffix (case ignored); CSV for any other."""
    suffix = os.path.splitext(path)[1].lower()
    for name in usable(rows=True):
        if suffix in FORMATS.get(name).suffixes:
            return name
    return FILE_FALLBACK


def format_help(rows: bool = False) -> str:
    """--format's help, from the registry: "table or json." for results; the row formats with their notes."""
    names = [f"{name} ({FORMATS.get(name).rows_note})" if rows and FORMATS.get(name).rows_note else name
             for name in usable(rows)]
    return (" or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)) + "."
