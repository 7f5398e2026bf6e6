"""Everything cnncli prints on stdout, for every verb, in every format: the one output layer.

A verb's library function returns plain data; the CLI hands it here with the format the user
asked for. FORMATS is the one list of format names. Results (one object: a training summary, an
evaluation, a layer table) come as a table or JSON; rows (predictions, streamed as they are
computed) as a table, CSV, JSON lines or one JSON array.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import typer
import yaml

from cnncli.errors import CnncliError
from cnncli.files.jsontext import dumps
from cnncli.output.rows import Layout, write_predictions
from cnncli.output.tables import TABLES
from cnncli.registry import Registry

FORMATS = Registry("output format", "--format")
for _name in ("table", "json", "csv", "jsonl"):
    FORMATS.register(_name, _name)
RESULT_FORMATS = ("table", "json")  # one object per command
ROW_FORMATS = ("table", "csv", "jsonl", "json")  # one row per input


def check_format(name: str, rows: bool = False) -> str:
    """`name` if it is a format this kind of output can be written in; else one line that lists them."""
    FORMATS.check(name)
    usable = ROW_FORMATS if rows else RESULT_FORMATS
    if name not in usable:
        raise CnncliError(f"--format {name}: not available here (use {', '.join(usable)})")
    return name


def show(kind: str, result: dict, form: str, stream: TextIO | None = None) -> None:
    """Print one verb's result: `kind` is training, lr_range, evaluation, inspection, data
    or resolved."""
    stream = stream or sys.stdout
    if kind == "resolved":  # the resolved recipe reads best as the YAML it came from

        stream.write(yaml.safe_dump(result, sort_keys=False, allow_unicode=True))
    elif check_format(form) == "json":
        stream.write(dumps(result, f"the {kind} result") + "\n")
    else:

        TABLES[kind](result, stream)


def row_format(name: str | None, output: str | None = None) -> str:
    """--format for prediction rows: as given; else from --output's suffix (.csv, .jsonl, .json;
    CSV for any other); else a table on a terminal and CSV when stdout is a pipe or a file."""
    if name is not None:
        return check_format(name, rows=True)
    if output and output != "-":
        return {".jsonl": "jsonl", ".json": "json"}.get(os.path.splitext(output)[1].lower(), "csv")
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
