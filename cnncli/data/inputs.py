"""What `cnncli predict` reads: arguments, a file with one input per line, or a manifest whose
other columns pass through to the output.

Everything is read as it is needed, so 100,000 lines cost no more memory than ten. An input that
is wrong in the list itself (an empty path cell, a line that is not valid text in the bundle's
encoding) becomes an Item with an error, which predict reports in its row; a manifest that cannot
be read as a table (not JSON, not the bundle's encoding) stops the run with one line naming it.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from cnncli.data.sample import Sample
from cnncli.data.sources import json_row
from cnncli.errors import CnncliError

# Column names a manifest's paths are found under when the bundle's own name is not there (its
# text: by the modality's own names, Modality.content_columns, as in training).
PATH_COLUMNS = ("path", "file", "filename", "filepath", "file_path", "image", "audio", "recording")


@dataclass
class Item:
    """One input to predict: its sample, the manifest cells that pass through, or what is wrong."""

    sample: Sample | None
    columns: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Inputs:
    """The inputs in order; `columns` are a manifest's column names (empty for other sources), and
    `key` names the output column that identifies each input (used by --resume)."""

    items: Iterable[Item]
    columns: list[str] = field(default_factory=list)
    key: str = "input"


def argument_inputs(modality: Any, arguments: Iterable[str]) -> Inputs:
    """Files, folders, globs, '-' and (text) sentences, as the modality expands them."""
    return Inputs(Item(sample) for sample in modality.expand_inputs(arguments))


def line_inputs(path: str, modality: Any, encoding: str) -> Inputs:
    """One input per non-blank line of `path` ('-': stdin): the sentence itself for a modality
    whose samples may be text, else a file path (taken as it is: no folders or globs)."""
    return Inputs(_line_items(path, bool(modality.text_samples), encoding))


def _line_items(path: str, text: bool, encoding: str) -> Iterator[Item]:
    name = "<stdin>" if path == "-" else path
    for number, raw in enumerate(_binary_lines(path), start=1):
        try:
            line = raw.decode(encoding).strip()
        except UnicodeDecodeError as error:
            where = f"{name}:{number}"
            yield Item(Sample(where), error=f"{where}: byte 0x{raw[error.start]:02x} at column {error.start + 1} is "
                                           f"not valid {encoding}")
            continue
        if line:
            yield Item(Sample(f"{name}:{number}", content=line, position=number - 1) if text else Sample(line))


def _binary_lines(path: str) -> Iterator[bytes]:
    if path == "-":
        yield from sys.stdin.buffer
        return
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise CnncliError(f"{path}: cannot read ({error.strerror})") from None
    with handle:
        yield from handle


def manifest_inputs(path: str, modality: Any, data: Any) -> Inputs:
    """A .csv, .tsv or .jsonl table: each row's path column (text bundles: its text column, or a
    path column naming .txt files) is the input; every column comes through to the output
    unchanged. Paths are relative to the manifest's folder, as in training."""
    manifest = Path(path)
    if manifest.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
        raise CnncliError(f"--manifest {path}: expected a .csv, .tsv or .jsonl file")
    rows = _manifest_rows(manifest, data.encoding)
    first = next(rows, None)
    if first is None:
        raise CnncliError(f"--manifest {path}: the manifest has no rows")
    columns = list(first[1])
    key, is_text = _input_column(manifest, columns, modality, data)

    def items() -> Iterator[Item]:
        for line, row in chain([first], rows):
            value = row.get(key)
            if value in (None, ""):
                yield Item(None, row, f"{manifest}:{line}: empty {key!r}")
            elif is_text:
                yield Item(Sample(f"{manifest}:{line}", content=str(value), position=line), row)
            else:
                yield Item(Sample(str(manifest.parent / str(value))), row)

    return Inputs(items(), columns, key)


def _input_column(manifest: Path, columns: list[str], modality: Any, data: Any) -> tuple[str, bool]:
    """(column, whether it holds the text itself): the bundle's own column name first, then a
    usual name (case-insensitive)."""
    lowered = {column.lower(): column for column in columns}
    candidates = []
    if modality.text_samples:
        candidates += [(data.text_column, True)] + [(name, True) for name in modality.content_columns]
    candidates += [(data.path_column, False)] + [(name, False) for name in PATH_COLUMNS]
    for name, is_text in candidates:
        if name in columns:
            return name, is_text
        if name.lower() in lowered:
            return lowered[name.lower()], is_text
    wanted = "neither a text nor a path column" if modality.text_samples else "no path column"
    raise CnncliError(f"--manifest {manifest}: {wanted} (columns: {', '.join(columns)}; looked for "
                      f"{', '.join(dict.fromkeys(name for name, _ in candidates))})")


def _manifest_rows(path: Path, encoding: str) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each row, read as it is needed."""
    try:
        handle = open(path, encoding=encoding, newline="")
    except OSError as error:
        raise CnncliError(f"--manifest {path}: cannot read ({error.strerror})") from None
    except LookupError:
        raise CnncliError(f"data.encoding: unknown encoding {encoding!r}") from None
    with handle:
        try:
            if path.suffix.lower() == ".jsonl":
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        yield number, json_row(path, number, line)
                return
            reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            for row in reader:
                yield reader.line_num, {key: value for key, value in row.items() if key is not None}
        except UnicodeDecodeError as error:
            raise CnncliError(f"--manifest {path}: byte 0x{error.object[error.start]:02x} is not valid {encoding}"
                              " (the bundle's data.encoding)") from None
