"""Everything cnncli prints on stdout, for every verb, in every format: the one output layer.

A verb's library function returns plain data; the CLI hands it here with the format the user
asked for. FORMATS (cnncli.output.formats) is the one registry of formats; the built-in ones are
registered below. Results (one object: a training summary, an evaluation, a layer table) come as
a table or JSON; rows (predictions, streamed as they are computed) as a table, CSV, JSON lines or
one JSON array.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import typer

from cnncli.files.jsontext import dumps
from cnncli.output.formats import FORMATS, OutputFormat, check_format, format_of_file
from cnncli.output.resume import read_csv_rows, read_jsonl_rows
from cnncli.output.rows import Layout, write_csv, write_json_array, write_jsonl, write_predictions, write_table_rows
from cnncli.output.tables import write_table


def write_json(kind: str, result: dict, stream: TextIO) -> None:
    """The `json` format's result writer: the result as one JSON object."""
    stream.write(dumps(result, f"the {kind} result") + "\n")


FORMATS.register("table", OutputFormat(write_result=write_table, write_rows=write_table_rows))
FORMATS.register("json", OutputFormat(write_result=write_json, write_rows=write_json_array, suffixes=(".json",),
                                      rows_note="one array"))
FORMATS.register("csv", OutputFormat(write_rows=write_csv, read_back=read_csv_rows, suffixes=(".csv",)))
FORMATS.register("jsonl", OutputFormat(write_rows=write_jsonl, read_back=read_jsonl_rows, suffixes=(".jsonl",)))


def show(kind: str, result: dict, form: str, stream: TextIO | None = None) -> None:
    """Print one verb's result: `kind` is training, lr_range, evaluation, inspection, data
    or resolved."""
    stream = stream or sys.stdout
    if kind == "resolved":  # the resolved recipe reads best as the YAML it came from
        import yaml  # here, not at the top: `cnncli --help` reads the formats from this package

        stream.write(yaml.safe_dump(result, sort_keys=False, allow_unicode=True))
    else:
        FORMATS.get(check_format(form)).write_result(kind, result, stream)


def row_format(name: str | None, output: str | None = None) -> str:
    """--format for prediction rows: as given; else from --output's suffix (.csv, .jsonl, .json,
    any registered format's; CSV for any other); else a table on a terminal and CSV when stdout is
    a pipe or a file."""
    if name is not None:
        return check_format(name, rows=True)
    if output and output != "-":
        return format_of_file(output)
    return "table" if sys.stdout.isatty() else "csv"


def write_rows(batches: Iterable[list[Any]], form: str, stream: TextIO, layout: Layout = Layout()) -> dict:
    """Write batches of prediction rows as they come; returns counts {"rows": n, "errors": m}."""
    return write_predictions(batches, check_format(form, rows=True), stream, layout)


def quiet_closed_pipe() -> None:
    """The reader of stdout went away (`| head -3`): point stdout at /dev/null, so that Python's
    own flush at exit has nothing left to fail on and the command ends without a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file descriptor (a test's captured stdout): nothing will be flushed there


def format_epoch(record: dict, members: int = 1) -> str:
    """One training epoch's log line."""
    text = f"member {record['member']}/{members}  " if "member" in record else ""
    text += (f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  acc {record['train_accuracy']:.4f}")
    if "val_loss" in record:
        text += f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.4f}"
    text += f"  lr {record['lr']:.2e}  {record['samples_per_second']:.0f} samples/s"
    if "peak_share" in record:
        text += f" ({record['gflops']:.1f} GFLOP/s, {record['peak_share']:.0%} of matmul peak)"
    return text + f"  {record['seconds']:.1f}s"


def wrote(paths: Iterable[str]) -> None:
    """One line on stderr per folder written to, naming its new files (stdout keeps the result)."""
    folders: dict[str, list[str]] = {}
    for path in map(str, paths):
        folder, _, name = path.rpartition("/")
        folders.setdefault(folder, []).append(name)
    for folder, names in folders.items():
        typer.echo(f"wrote {folder + '/' if folder else ''}{', '.join(names)}", err=True)


def warn(message: str) -> None:
    """One yellow line on stderr: a skipped input, a note on the data, a count of errors."""
    typer.secho(message, fg=typer.colors.YELLOW, err=True)
