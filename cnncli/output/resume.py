"""--resume: what an interrupted run already wrote to its --output file, so a rerun skips it.

Rows are appended in input order and flushed a chunk at a time, so the file always holds the
rows of the first N inputs, plus, after a kill, perhaps the start of one more row. `finished_rows`
cuts the file back to its last whole chunk of rows and returns their input keys; predict checks
them against its first inputs and skips those, so the finished file equals, byte for byte, the
one an uninterrupted run writes. Each format that can be resumed reads its own rows back (its
registered `read_back`; CSV's and JSON lines' are here).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from cnncli.errors import CnncliError
from cnncli.output.formats import FORMATS, resumable
from cnncli.output.rows import Layout, cell_text


@dataclass
class Finished:
    """The rows a previous run wrote: each one's input key, in order; how many were errors; and
    whether the file already starts with a CSV header."""

    keys: list[str] = field(default_factory=list)
    errors: int = 0
    header: bool = False
    error_rows: list[bool] = field(default_factory=list, repr=False)  # while reading: which rows are errors


def finished_rows(path: str | None, form: str, layout: Layout, key: str, window: bool = False,
                  chunk: int = 1) -> Finished:
    """The finished rows of `path` (none if it does not exist yet). Only whole chunks of `chunk`
    rows count: the file is cut back to the last one, so that the rerun predicts each chunk with
    the same inputs in it as an uninterrupted run and writes the same bytes."""
    if not path or path == "-":
        raise CnncliError("--resume: needs --output FILE (the rows to continue)")
    if not FORMATS.get(form).resumable:
        raise CnncliError(f"--resume: rows can be appended in {' or '.join(resumable())}, not {form}")
    if window:
        raise CnncliError("--resume: not with --window or --segment (a recording's rows are not one row per input)")
    target = Path(path)
    if not target.exists():
        return Finished()
    try:
        text = target.read_bytes().decode("utf-8")
    except OSError as error:
        raise CnncliError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise CnncliError(f"{path}: not a cnncli output (not UTF-8 text); choose another --output") from None
    text = text[:text.rfind("\n") + 1]  # a kill may have cut the last row short
    finished, ends = FORMATS.get(form).read_back(path, text, layout, key)
    kept = len(finished.keys) // chunk * chunk
    end = ends[kept]  # ends[0]: where the rows start (after a CSV header)
    with open(target, "r+b") as handle:
        handle.truncate(len(text[:end].encode("utf-8")))
    kept_keys = finished.keys[:kept]
    return Finished(kept_keys, sum(finished.error_rows[:kept]), finished.header)


def read_csv_rows(path: str, text: str, layout: Layout, key: str) -> tuple[Finished, list[int]]:
    """A CSV output's rows (its header must be this run's) and where each ends; ends[0]: after the header."""
    stream = io.StringIO(text, newline="")
    reader = csv.reader(stream, strict=True)
    rows, ends = [], [0]
    try:
        for row in reader:
            rows.append(row)
            ends.append(stream.tell())
    except csv.Error as error:
        raise CnncliError(f"{path}: not a readable CSV file ({error}); choose another --output") from None
    if not rows:
        return Finished(), [0]
    names = layout.names()
    if rows[0] != names:
        raise CnncliError(f"{path}: its columns ({','.join(rows[0])}) are not this run's ({','.join(names)}); "
                          "choose another --output")
    if any(len(row) != len(names) for row in rows[1:]):
        raise CnncliError(f"{path}: a row does not have {len(names)} columns; choose another --output")
    key_at = names.index(key)
    finished = Finished([row[key_at] for row in rows[1:]], header=True)
    finished.error_rows = [bool(row[-1]) for row in rows[1:]]
    return finished, ends[1:]


def read_jsonl_rows(path: str, text: str, layout: Layout, key: str) -> tuple[Finished, list[int]]:
    """A JSON lines output's rows (each must hold `key`) and where each ends; ends[0] is 0."""
    error_name = layout.renamed()["error"]
    finished, ends = Finished(), [0]
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise CnncliError(f"{path}:{number}: not a JSON line; choose another --output") from None
        if not isinstance(row, dict) or key not in row:
            raise CnncliError(f"{path}:{number}: not a row of this run (no {key!r}); choose another --output")
        finished.keys.append(cell_text(row[key]))
        finished.error_rows.append(row.get(error_name) is not None)
        ends.append(ends[-1] + len(line))
    return finished, ends
