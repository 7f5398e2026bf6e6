"""--resume: what an interrupted run already wrote to its --output file, so a rerun skips it.

Rows are appended in input order and flushed a chunk at a time, so the file always holds the
rows of the first N inputs, plus, after a kill, perhaps the start of one more row. `finished_rows`
cuts the file back to its last whole chunk of rows and returns their input keys; predict checks
them against its first inputs and skips those, so the finished file equals, byte for byte, the
one an uninterrupted run writes. Each format that can be resumed reads its own rows back (its
registered `read_back`; CSV's and JSON lines' are here).

What the file was started with (the bundle, the format, the options that change its rows) is
recorded beside it in FILE.resume.json, written atomically when the file is started; a rerun
that differs is refused, naming what differs, instead of appending rows of another kind. A file
without that record (written without --resume, or by an older cnncli) is resumed as before.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from cnncli.errors import CnncliError
from cnncli.files.atomic import write_file
from cnncli.files.jsontext import dumps, loads
from cnncli.files.reading import read_limited
from cnncli.output.formats import FORMATS, resumable
from cnncli.output.rows import Layout, cell_text

# What a resumed file records and a rerun must repeat, with the flag that sets each (in the order checked)
RECORDED = {"bundle_digest": "BUNDLE", "format": "--format", "columns": "--manifest (its columns)",
            "top_k": "--top-k", "threshold": "--threshold", "adapt": "--adapt", "escape_formulas": "--escape-formulas"}


@dataclass
class Finished:
    """The rows a previous run wrote: each one's input key, in order; how many were errors; and
    whether the file already starts with a CSV header."""

    keys: list[str] = field(default_factory=list)
    errors: int = 0
    header: bool = False
    error_rows: list[bool] = field(default_factory=list, repr=False)  # while reading: which rows are errors


def finished_rows(path: str | None, form: str, layout: Layout, key: str, window: bool = False,
                  chunk: int = 1, started: dict | None = None) -> Finished:
    """The finished rows of `path` (none if it does not exist yet). Only whole chunks of `chunk`
    rows count: the file is cut back to the last one, so that the rerun predicts each chunk with
    the same inputs in it as an uninterrupted run and writes the same bytes. `started`: this
    run's bundle ("bundle": its path, "bundle_digest") and settings, checked against the record
    of the run that started the file (see the module's docstring)."""
    if not path or path == "-":
        raise CnncliError("--resume: needs --output FILE (the rows to continue)")
    if not FORMATS.get(form).resumable:
        raise CnncliError(f"--resume: rows can be appended in {' or '.join(resumable())}, not {form}")
    if window:
        raise CnncliError("--resume: not with --window or --segment (a recording's rows are not one row per input)")
    target = Path(path)
    if started is not None:
        check_started_with(target, form, layout, started)
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


def record_name(path: Path) -> Path:
    """Where what --output FILE was started with is recorded: FILE.resume.json beside it."""
    return path.with_name(path.name + ".resume.json")


def check_started_with(target: Path, form: str, layout: Layout, started: dict) -> None:
    """Refuse to append to `target` rows unlike those it holds (another bundle, format or option);
    record this run's when the file is new (or has no record yet)."""
    now = {"bundle": started.get("bundle"), **{name: started.get(name) for name in RECORDED},
           "format": form, "columns": layout.columns, "escape_formulas": layout.escape_formulas}
    recorded = record_name(target)
    if target.exists() and target.stat().st_size and recorded.is_file():
        before = loads(read_limited(recorded, 1_000_000, "--resume record").decode("utf-8", "replace"), str(recorded))
        if not isinstance(before, dict):
            raise CnncliError(f"{recorded}: not a record of a --resume run; remove it or choose another --output")
        for name, flag in RECORDED.items():
            if before.get(name) != now[name]:
                raise CnncliError(f"--resume: {target} was started with {_differs(flag, before, now, name)}; "
                                  "give the same, or choose another --output")
        return
    write_file(recorded, (dumps(now, str(recorded), indent=1) + "\n").encode("utf-8"))


def _differs(flag: str, before: dict, now: dict, name: str) -> str:
    """What differs, as a user would say it: '--top-k 2, not 3', 'no --threshold, not --threshold 0.9'."""
    if flag == "BUNDLE":
        if before.get("bundle") == now["bundle"]:
            return f"another version of the bundle {now['bundle']} (it has changed since)"
        return f"the bundle {before.get('bundle')}, not {now['bundle']}"
    old, new = before.get(name), now[name]
    if isinstance(old, (int, float, str)) and isinstance(new, (int, float, str)) \
            and not isinstance(old, bool) and not isinstance(new, bool):
        return f"{flag} {old}, not {new}"
    return f"{_setting(flag, old)}, not {_setting(flag, new)}"


def _setting(flag: str, value) -> str:
    """'--adapt', 'no --threshold', '--manifest (its columns) id, sentence'."""
    if value is None or value is False or value == []:
        return f"no {flag}"
    return flag if value is True else f"{flag} {', '.join(map(str, value)) if isinstance(value, list) else value}"
