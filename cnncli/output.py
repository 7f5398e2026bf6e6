"""Rows out: CSV and JSONL streamed as they come (pipe-friendly), tables for people.

`open_output` gives a stream that lands atomically at a path (temp file + rename on success),
or stdout when no path is given.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from cnncli.predict import Prediction


@contextmanager
def open_output(path: str | None) -> Iterator[TextIO]:
    if path is None or path == "-":
        yield sys.stdout
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("w", encoding="utf-8", newline="") as stream:
            yield stream
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_predictions(rows: Iterable[Prediction], form: str, stream: TextIO, windows: bool = False) -> dict:
    """Write rows in `form` (csv, jsonl, table); returns counts {"rows": n, "errors": m}."""
    counts = {"rows": 0, "errors": 0}

    def counted(items):
        for row in items:
            counts["rows"] += 1
            counts["errors"] += row.error is not None
            yield row

    if form == "jsonl":
        for row in counted(rows):
            stream.write(json.dumps(row.as_dict(), ensure_ascii=False) + "\n")
            stream.flush()
    elif form == "csv":
        writer = csv.writer(stream)
        header = ["input"] + (["start", "end"] if windows else []) + ["label", "score", "top", "error"]
        writer.writerow(header)
        for row in counted(rows):
            top = ";".join(f"{label}:{score:.4f}" for label, score in row.top)
            span = [_blank(row.start), _blank(row.end)] if windows else []
            writer.writerow([row.input, *span, _blank(row.label),
                             "" if row.score is None else f"{row.score:.6f}", top, _blank(row.error)])
            stream.flush()
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(show_edge=False, header_style="bold")
        for column in ["input"] + (["start", "end"] if windows else []) + ["label", "score", "top"]:
            table.add_column(column, overflow="fold")
        for row in counted(rows):
            top = ", ".join(f"{label} {score:.3f}" for label, score in row.top)
            span = [_blank(row.start), _blank(row.end)] if windows else []
            if row.error:
                table.add_row(row.input, *span, "[red]error[/red]", "", f"[red]{row.error}[/red]")
            else:
                table.add_row(row.input, *span, row.label, f"{row.score:.4f}", top)
        Console(file=stream, width=None if stream.isatty() else 160).print(table)
    return counts


def _blank(value) -> str:
    return "" if value is None else str(value)
