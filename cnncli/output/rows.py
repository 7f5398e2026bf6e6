"""Prediction rows out: CSV, JSON lines or a JSON array streamed as they come (pipe-friendly),
or a table for people. Rows arrive in batches and each batch is flushed at once, so a reader of
the pipe (or a later --resume) sees whole rows as soon as they exist.

File names that are not valid UTF-8 reach Python as surrogate escapes; CSV and tables write them
back as the original bytes (as `ls` would), JSON as \\udcXX escapes (so the file stays UTF-8 and
`os.fsencode(json.loads(...))` gives the name back), instead of failing after every row is computed.

The columns: for plain inputs `input` (with `start`, `end` for windows), then `label`, `score`,
`top`, `error`; for a manifest, its own columns unchanged and in order, then the prediction's
(named `predicted_label` and so on where the manifest already has a column of that name).
"""

from __future__ import annotations

import csv
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cnncli.files.atomic import open_file, out_of_room
from cnncli.files.jsontext import dumps
from cnncli.output.formats import FORMATS
from cnncli.output.tables import shown

PREDICTED = ("label", "score", "top", "error")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run (OWASP's CSV injection list)


@contextmanager
def open_output(path: str | None, append: bool = False) -> Iterator[TextIO]:
    """stdout for no path or '-'; otherwise a file that appears only once it is complete, or
    (`append`, for --resume) the file itself, rows added as they are written."""
    if path is None or path == "-":
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors="surrogateescape")
        yield sys.stdout
        return
    if append:
        try:
            with open(path, "a", encoding="utf-8", newline="", errors="surrogateescape") as stream:
                yield stream
        except OSError as error:
            refused = out_of_room(error, Path(path), "the rows written so far are kept: make room, then run the "
                                                     "same command again (--resume goes on from them)")
            if refused is None:
                raise
            raise refused from None
        return
    with open_file(path, "w", encoding="utf-8", newline="", errors="surrogateescape") as stream:
        yield stream


@dataclass
class Layout:
    """What the rows hold: a manifest's column names (empty for plain inputs), whether rows are
    windows of recordings (start, end), whether to write a header (not when appending), and
    whether CSV cells a spreadsheet would run as a formula get a leading quote."""

    columns: list[str] = field(default_factory=list)
    windows: bool = False
    header: bool = True
    escape_formulas: bool = False

    def renamed(self) -> dict[str, str]:
        """The prediction's field names, prefixed `predicted_` where the manifest has the name."""
        return {name: f"predicted_{name}" if name in self.columns else name for name in ("start", "end", *PREDICTED)}

    def names(self) -> list[str]:
        """The output's column names (see the module's docstring)."""
        renamed = self.renamed()
        span = [renamed["start"], renamed["end"]] if self.windows else []
        return [*(self.columns or ["input"]), *span, *(renamed[name] for name in PREDICTED)]


def write_predictions(batches: Iterable[list[Any]], form: str, stream: TextIO, layout: Layout = Layout()) -> dict:
    """Write batches of rows in `form` (a registered format: csv, jsonl, json, table, ...); returns
    counts {"rows": n, "errors": m}."""
    counts = {"rows": 0, "errors": 0}

    def counted(items):
        for batch in items:
            counts["rows"] += len(batch)
            counts["errors"] += sum(row.error is not None for row in batch)
            yield batch

    FORMATS.get(form).write_rows(counted(batches), stream, layout)
    return counts


def record(row: Any, layout: Layout) -> dict:
    """One row as a JSON object: `input` (or the manifest's cells), then the prediction."""
    names = layout.renamed()
    out = dict(row.columns) if layout.columns else {"input": row.input}
    out.update({names["label"]: row.label, names["score"]: row.score})
    if row.start is not None or row.end is not None:
        out.update({names["start"]: row.start, names["end"]: row.end})
    out.update({names["top"]: [{"label": label, "score": score} for label, score in row.top],
                names["error"]: row.error})
    return out


def json_row(row: Any, layout: Layout) -> str:
    """One row as JSON text: UTF-8 as typed, or ASCII escapes when a file name is not UTF-8."""
    text = dumps(record(row, layout), "the output", ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return dumps(record(row, layout), "the output")
    return text


def write_jsonl(batches, stream: TextIO, layout: Layout) -> None:
    """The `jsonl` format: one JSON object per row and line, each batch flushed as it comes."""
    for batch in batches:
        stream.write("".join(json_row(row, layout) + "\n" for row in batch))
        stream.flush()


def write_json_array(batches, stream: TextIO, layout: Layout) -> None:
    """The `json` format's rows: one JSON array, its rows written as they come."""
    stream.write("[")
    separator = "\n"
    for batch in batches:
        for row in batch:
            stream.write(separator + json_row(row, layout))
            separator = ",\n"
        stream.flush()
    stream.write("\n]\n")


def write_csv(batches, stream: TextIO, layout: Layout) -> None:
    """The `csv` format: a header (unless appending to a file that has one), then a line per row."""
    cell = escape_formula if layout.escape_formulas else str
    writer = csv.writer(stream)
    if layout.header:
        writer.writerow(layout.names())
    for batch in batches:
        for row in batch:
            top = ";".join(f"{label}:{score:.4f}" for label, score in row.top)
            leading = _leading(row, layout)
            leading[:len(layout.columns) or 1] = map(cell, leading[:len(layout.columns) or 1])
            writer.writerow([*leading, cell(_blank(row.label)), "" if row.score is None else f"{row.score:.6f}",
                             cell(top), cell(_blank(row.error))])
        stream.flush()


def write_table_rows(batches, stream: TextIO, layout: Layout) -> None:
    """The `table` format's rows: one rich table, printed once every row is in (its widths need them all)."""
    table = Table(show_edge=False, header_style="bold")
    for column in layout.names()[:-1]:  # errors show in the label and top columns
        table.add_column(column, overflow="fold")
    for batch in batches:
        for row in batch:
            cells = [Text(shown(cell)) for cell in _leading(row, layout)]  # control characters escaped
            if row.error:
                cells += [Text("error", style="red"), "", Text(shown(row.error), style="red")]
            else:
                top = ", ".join(f"{label} {score:.3f}" for label, score in row.top)
                cells += [Text(shown(row.label)), f"{row.score:.4f}", Text(shown(top))]
            table.add_row(*cells)
    Console(file=stream, width=None if stream.isatty() else 160).print(table)


def _leading(row: Any, layout: Layout) -> list[str]:
    """The cells before the prediction's: the input (or the manifest's cells), and a window's span."""
    cells = [cell_text(row.columns.get(name)) for name in layout.columns] if layout.columns else [row.input]
    return cells + ([_blank(row.start), _blank(row.end)] if layout.windows else [])


def cell_text(value: Any) -> str:
    """A manifest cell as CSV text (and as the key --resume compares): strings as they are, other
    JSON values as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else dumps(value, "a manifest cell", ensure_ascii=False)


def _blank(value) -> str:
    return "" if value is None else str(value)


def escape_formula(text: str) -> str:
    """OWASP's advice against CSV injection: a cell a spreadsheet would read as a formula is
    prefixed with a single quote, which the spreadsheet shows as text. Spreadsheets also read a
    formula after leading spaces and in the fullwidth signs of East Asian input (＝ ＋ － ＠), so
    those count too: compared as NFKC, Unicode's compatibility form, folds them to = + - @."""
    folded = unicodedata.normalize("NFKC", text[:64]).lstrip()
    return "'" + text if text.startswith(FORMULA_STARTS) or folded.startswith(FORMULA_STARTS) else text
