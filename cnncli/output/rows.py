"""Prediction rows out: CSV, JSON lines or a JSON array streamed as they come (pipe-friendly),
or a table for people. `open_output` lands them atomically at a path, or sends them to stdout.

File names that are not valid UTF-8 reach Python as surrogate escapes; CSV and tables write them
back as the original bytes (as `ls` would), JSON as \\udcXX escapes (so the file stays UTF-8 and
`os.fsencode(json.loads(...))` gives the name back), instead of failing after every row is computed.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cnncli.atomic import open_file
from cnncli.jsontext import dumps

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run (OWASP's CSV injection list)


@contextmanager
def open_output(path: str | None) -> Iterator[TextIO]:
    """stdout for no path or '-'; otherwise a file that appears only once it is complete."""
    if path is None or path == "-":
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors="surrogateescape")
        yield sys.stdout
        return
    with open_file(path, "w", encoding="utf-8", newline="", errors="surrogateescape") as stream:
        yield stream


def write_predictions(rows: Iterable[Any], form: str, stream: TextIO, windows: bool = False,
                      escape_formulas: bool = False) -> dict:
    """Write rows in `form` (csv, jsonl, json, table); returns counts {"rows": n, "errors": m}.
    `escape_formulas`: CSV cells a spreadsheet would run as a formula get a leading quote."""
    counts = {"rows": 0, "errors": 0}

    def counted(items):
        for row in items:
            counts["rows"] += 1
            counts["errors"] += row.error is not None
            yield row

    if form == "csv":
        _csv(counted(rows), stream, windows, escape_formulas)
    else:
        WRITERS[form](counted(rows), stream, windows)
    return counts


def json_row(row: Any) -> str:
    """One row as JSON text: UTF-8 as typed, or ASCII escapes when a file name is not UTF-8."""
    text = dumps(row.as_dict(), "the output", ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return dumps(row.as_dict(), "the output")
    return text


def _jsonl(rows: Iterable[Any], stream: TextIO, windows: bool) -> None:
    for row in rows:
        stream.write(json_row(row) + "\n")
        stream.flush()


def _json(rows: Iterable[Any], stream: TextIO, windows: bool) -> None:
    stream.write("[")
    for number, row in enumerate(rows):
        stream.write(("," if number else "") + "\n" + json_row(row))
        stream.flush()
    stream.write("\n]\n")


def _csv(rows: Iterable[Any], stream: TextIO, windows: bool, escape_formulas: bool = False) -> None:
    cell = _escaped if escape_formulas else str
    writer = csv.writer(stream)
    writer.writerow(["input"] + (["start", "end"] if windows else []) + ["label", "score", "top", "error"])
    for row in rows:
        top = ";".join(f"{label}:{score:.4f}" for label, score in row.top)
        span = [_blank(row.start), _blank(row.end)] if windows else []
        writer.writerow([cell(row.input), *span, cell(_blank(row.label)),
                         "" if row.score is None else f"{row.score:.6f}", cell(top), cell(_blank(row.error))])
        stream.flush()


def _table(rows: Iterable[Any], stream: TextIO, windows: bool) -> None:
    table = Table(show_edge=False, header_style="bold")
    for column in ["input"] + (["start", "end"] if windows else []) + ["label", "score", "top"]:
        table.add_column(column, overflow="fold")
    for row in rows:
        top = ", ".join(f"{label} {score:.3f}" for label, score in row.top)
        span = [_blank(row.start), _blank(row.end)] if windows else []
        if row.error:
            table.add_row(Text(row.input), *span, Text("error", style="red"), "", Text(row.error, style="red"))
        else:
            table.add_row(Text(row.input), *span, Text(row.label), f"{row.score:.4f}", Text(top))
    Console(file=stream, width=None if stream.isatty() else 160).print(table)


WRITERS = {"jsonl": _jsonl, "json": _json, "csv": _csv, "table": _table}


def _blank(value) -> str:
    return "" if value is None else str(value)


def _escaped(text: str) -> str:
    """OWASP's advice against CSV injection: a cell a spreadsheet would read as a formula is
    prefixed with a single quote, which the spreadsheet shows as text."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text
