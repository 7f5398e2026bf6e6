"""What `cnncli predict` reads: arguments, a file with one input per line, or a manifest whose
other columns pass through to the output.

Everything is read as it is needed, so 100,000 lines cost no more memory than ten. An input that
is wrong in the list itself (an empty path cell, a line that is not valid text in the bundle's
encoding) becomes an Item with an error, which predict reports in its row; a manifest that cannot
be read as a table (not JSON, not the bundle's encoding) stops the run with one line naming it.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from cnncli.data.sample import Sample
from cnncli.data.tables import csv_options, delimiter_of, is_json_lines, json_row
from cnncli.errors import CnncliError
from cnncli.files.reading import bounded_lines, open_regular
from cnncli.limits import MAX_LINE_BYTES

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
    """Files, folders, globs, '-' and (text) sentences, as the modality expands them; a folder
    that holds none of the modality's files is a row that says so. An empty argument stops the
    run before any row (as a path it would mean the current folder, and predict everything there)."""
    arguments = list(arguments)  # command-line arguments: few, all checked before the first row
    for position, argument in enumerate(arguments, start=1):
        if not str(argument).strip():
            wanted = "a path or a sentence" if modality.text_samples else "a path"
            raise CnncliError(f"inputs: argument {position} is empty ({argument!r}); expected {wanted}")
    return Inputs(_argument_items(modality, arguments))


def _argument_items(modality: Any, arguments: Iterable[str]) -> Iterator[Item]:
    for argument in arguments:
        found = False
        for sample in modality.expand_inputs([argument]):
            found = True
            yield Item(sample)
        if not found and os.path.isdir(argument):
            yield Item(Sample(argument), error=f"{argument}: an empty folder (no files with suffix "
                                               f"{', '.join(modality.extensions)} in it)")


def line_inputs(path: str, modality: Any, encoding: str) -> Inputs:
    """One input per non-blank line of `path` ('-': stdin): the sentence itself for a modality
    whose samples may be text, else a file path (taken as it is: no folders or globs)."""
    return Inputs(_line_items(path, bool(modality.text_samples), encoding))


def _line_items(path: str, text: bool, encoding: str) -> Iterator[Item]:
    """An item per line; a blank line, or one of NUL bytes only, is a row with an error (a list
    that lost its inputs says so rather than printing fewer rows)."""
    name = "<stdin>" if path == "-" else path
    for number, raw in enumerate(_binary_lines(path, name), start=1):
        where = f"{name}:{number}"
        try:
            line = raw.decode(encoding).strip()
        except UnicodeDecodeError as error:
            yield Item(Sample(where), error=f"{where}: byte 0x{raw[error.start]:02x} at column {error.start + 1} is "
                                           f"not valid {encoding}")
            continue
        if not line.replace("\x00", "").strip():
            what = "only NUL bytes" if line else "a blank line"
            yield Item(Sample(where), error=f"{where}: {what}, not an input")
        else:
            yield Item(Sample(where, content=line, position=number - 1) if text else Sample(line))


def _binary_lines(path: str, name: str) -> Iterator[bytes]:
    """The lines of `path` ('-': stdin), each of at most MAX_LINE_BYTES; a regular file or a pipe
    (`--lines <(command)`), never a device that has no end."""
    if path == "-":
        yield from bounded_lines(sys.stdin.buffer, MAX_LINE_BYTES, name)
        return
    with open_regular(path, "list of inputs", pipes=True) as handle:
        yield from bounded_lines(handle, MAX_LINE_BYTES, name)


def manifest_inputs(path: str, modality: Any, data: Any) -> Inputs:
    """A .csv, .tsv or .jsonl table: each row's path column (text bundles: its text column, or a
    path column naming .txt files) is the input; every column comes through to the output
    unchanged. Paths are relative to the manifest's folder, as in training. A table the bundle
    reads without a header row (data.header: false, or its columns named by number) has its
    columns named 0, 1, ...; a JSON line that is no object is a row with an error."""
    manifest = Path(path)
    if manifest.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
        raise CnncliError(f"--manifest {path}: expected a .csv, .tsv or .jsonl file")
    headerless = not is_json_lines(manifest) and (data.header is False or any(
        isinstance(column, int) for column in (data.text_column, data.path_column)))
    rows = _manifest_rows(manifest, data.encoding, headerless)
    head = []
    for line, row in rows:  # the columns come from the first row that is one
        head.append((line, row))
        if not isinstance(row, str):
            break
    if not head or isinstance(head[-1][1], str):
        raise CnncliError(f"--manifest {path}: the manifest has no rows")
    columns = list(head[-1][1])
    key, is_text = _input_column(manifest, columns, modality, data)

    def items() -> Iterator[Item]:
        for line, row in chain(head, rows):
            value = row.get(key) if isinstance(row, dict) else None
            if isinstance(row, str):
                yield Item(Sample(f"{manifest}:{line}"), {}, row)
            elif value in (None, ""):
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
        candidates += [(str(data.text_column), True)] + [(name, True) for name in modality.content_columns]
    candidates += [(str(data.path_column), False)] + [(name, False) for name in PATH_COLUMNS]
    for name, is_text in candidates:
        if name in columns:
            return name, is_text
        if name.lower() in lowered:
            return lowered[name.lower()], is_text
    wanted = "neither a text nor a path column" if modality.text_samples else "no path column"
    raise CnncliError(f"--manifest {manifest}: {wanted} (columns: {', '.join(columns)}; looked for "
                      f"{', '.join(dict.fromkeys(name for name, _ in candidates))})")


def _manifest_rows(path: Path, encoding: str, headerless: bool) -> Iterator[tuple[int, dict | str]]:
    """(line number, row) for each row, read as it is needed; a JSON line that is no object is
    (line number, its error). Without a header row, the columns are named "0", "1", ..."""
    try:
        handle = io.TextIOWrapper(open_regular(path, "manifest"), encoding=encoding, newline="")
    except LookupError:
        raise CnncliError(f"data.encoding: unknown encoding {encoding!r}") from None
    with handle:
        lines = bounded_lines(handle, MAX_LINE_BYTES, f"--manifest {path}")
        try:
            if is_json_lines(path):
                for number, line in enumerate(lines, start=1):
                    if line.strip():
                        yield number, _json_or_error(path, number, line)
                return
            reader = csv.reader(lines, **csv_options(delimiter_of(path, "")))
            names = None if headerless else next(reader, None)
            for cells in (cells for cells in reader if cells):  # (a blank line reads as no cells)
                keys = names if names is not None else [str(index) for index in range(len(cells))]
                yield reader.line_num, dict(zip(keys, cells))
        except UnicodeDecodeError as error:
            raise CnncliError(f"--manifest {path}: byte 0x{error.object[error.start]:02x} is not valid {encoding}"
                              " (the bundle's data.encoding)") from None
        except csv.Error as error:
            raise CnncliError(f"--manifest {path}: line {reader.line_num} is not a table row ({error})") from None


def _json_or_error(path: Path, number: int, line: str) -> dict | str:
    try:
        return json_row(path, number, line)
    except CnncliError as error:
        return str(error)
