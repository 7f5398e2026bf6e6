"""Read samples from where users keep them: class folders, manifests, idx files, text lines.

Every reader returns a list of Sample in a stable order (sorted listings, file order), so that
seeded splits are reproducible. Formats:

- folder:          ROOT/<class>/<file>            (ImageFolder convention; label = folder name)
- split folders:   ROOT/{train,val,test}/<class>/<file>, any case: read as those splits (split.py)
- files:           ROOT/**/<file>, label from `label_regex` on the file name (`^(\\d)_` for FSDD)
- manifest:        .csv / .tsv / .jsonl with path (or text) and label columns; paths relative to it
- idx:             MNIST-format `*-images-idx3-ubyte[.gz]` with its `*-labels-idx1-ubyte[.gz]`
- lines:           one sample per line; label from `label_regex` on the file name (MR's .pos/.neg)
- labelled_lines:  "LABEL the sentence ..." per line (the SST files); the default for a text
                   file when no `label_regex` takes the label from its name

Real files are untidy, so reading reports instead of refusing where the data allow it
(`ReadReport`): a line with a label and no text is skipped and its line number kept, and with
`data.encoding: auto` each file's encoding is detected (charset-normalizer) and kept. Tables
with or without a header row, and rows that do not match lines, are cnncli.data.tables' concern;
listing folders (never into /proc) cnncli.data.listing's. Labels that look misread (most classes
of one sample) are refused with what the file looks like (`refuse_misread_labels`).
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnncli.data.idx import read_idx
from cnncli.data.idx import read_idx_array as read_idx_array
from cnncli.data.listing import list_files, refuse_system_folder
from cnncli.data.sample import Sample
from cnncli.data.schema import DataConfig
from cnncli.data.tables import Table, first_row_is_data, guess_columns, read_table, tab_table_hint
from cnncli.data.textfile import AUTO_ENCODING as AUTO_ENCODING
from cnncli.data.textfile import ENCODING_HINT as ENCODING_HINT
from cnncli.data.textfile import detect_encoding as detect_encoding
from cnncli.data.textfile import read_lines as read_lines
from cnncli.data.textfile import read_numbered_lines
from cnncli.errors import CnncliError

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")
IDX_PATTERN = re.compile(r"idx\d-ubyte(\.gz)?$")
# Column names a manifest's label is found by when the recipe's name is absent (its text: by the
# modality's own names, Modality.content_columns).
LABEL_COLUMNS = ("label", "class", "category", "target", "sentiment", "intent", "type", "labels", "y")
# The sub-folders of a folder laid out by split (any case), and the split each one holds.
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
# A training split is refused as misread when it has at least this many classes and most of them
# have one sample (a sentence read as its own label): no network learns a class from one example.
MISREAD_CLASSES = 20


@dataclass
class ReadReport:
    """What reading found that the user should hear about, kept for the summary and the bundle."""

    skipped: list[str] = field(default_factory=list)  # "file:line" of each line with a label and no text
    encodings: dict[str, str] = field(default_factory=dict)  # file -> encoding detected (data.encoding: auto)
    columns: dict[str, str | int] = field(default_factory=dict)  # manifest columns found: key -> name or number
    bad_rows: list[str] = field(default_factory=list)  # "file:line: why" of each manifest line that is no row
    spans: list[str] = field(default_factory=list)  # "file: lines a-b" of each table row read across lines
    headerless: list[str] = field(default_factory=list)  # tables whose first row was read as data
    unreadable: list[str] = field(default_factory=list)  # folders among the data that could not be listed
    hints: dict[str, str] = field(default_factory=dict)  # file -> what it looks like, should its labels be wrong

    def record(self) -> dict:
        """The JSON-able summary for the bundle (the first 100 skipped lines, and their count)."""
        return {"skipped_lines": len(self.skipped), "skipped": self.skipped[:100], "encodings": dict(self.encodings),
                "columns": dict(self.columns), "bad_rows": self.bad_rows[:100], "spans": self.spans[:100],
                "headerless": list(self.headerless)}

    def notes(self) -> list[str]:
        notes = [f"{path}: encoding {encoding} (detected; data.encoding: auto)"
                 for path, encoding in self.encodings.items()]
        notes += [f"{path}: no header row (its first row reads as data); columns are numbered from 0"
                  for path in self.headerless]
        notes += [f"data.{key}: using the column {column!r} " + ("(found by name)" if isinstance(column, str) else
                                                                 "(found by its values)")
                  for key, column in self.columns.items()]
        for count, what, items in ((len(self.skipped), "line(s) with a label and no text", self.skipped),
                                   (len(self.bad_rows), "manifest line(s) that are no row", self.bad_rows),
                                   (len(self.unreadable), "folder(s) that could not be read", self.unreadable)):
            if count:
                notes.append(f"warning: skipped {count} {what}: {_shown(items)}")
        if self.spans:
            notes.append(f"warning: {len(self.spans)} table row(s) read across several lines, each as one row (a "
                         f"field that opens with a quote runs on to the next quote): {_shown(self.spans)}")
        return notes


def _shown(items: Sequence[str]) -> str:
    return "; ".join(items[:5]) + ("; ..." if len(items) > 5 else "")


def read_sources(paths: str | Sequence[str], data: DataConfig, modality: Any,
                 report: ReadReport | None = None) -> list[Sample]:
    """Samples from one or more recipe paths (relative to data.root; globs allowed) for a modality
    (its class or an instance): its `extensions` are the files folders are searched for, and
    with `text_samples` a text file or manifest column may hold the samples themselves. Lines
    skipped and encodings detected are added to `report`."""
    report = report if report is not None else ReadReport()
    samples: list[Sample] = []
    for path in resolve_paths(paths, data.root):
        samples.extend(read_source(path, data, modality, report))
    return samples


def resolve_paths(paths: str | Sequence[str], root: str) -> list[Path]:
    """Recipe paths -> existing paths, expanding globs; a path that matches nothing is an error."""
    resolved: list[Path] = []
    for item in [paths] if isinstance(paths, str) else paths:
        full = Path(root).expanduser() / Path(item).expanduser()
        if full.exists():  # a name with [ or * in it is a name first, a pattern only if nothing has it
            resolved.append(full)
        elif glob.has_magic(str(item)):
            pattern = str(Path(glob.escape(str(Path(root).expanduser()))) / Path(item).expanduser())
            matches = sorted(Path(match) for match in glob.glob(pattern))
            if not matches:
                raise CnncliError(f"{full}: the pattern matches no file")
            resolved.extend(matches)
        else:
            raise CnncliError(f"{full}: no such file or folder (check data.root and the data paths)")
    return resolved


def read_source(path: Path, data: DataConfig, modality: Any, report: ReadReport | None = None) -> list[Sample]:
    """Samples from one existing path, in the format the recipe names or the path suggests."""
    report = report if report is not None else ReadReport()
    extensions = modality.extensions
    refuse_system_folder(path)
    kind = detect_format(path, data, modality.text_samples)
    if kind == "folder":
        return read_class_folders(path, extensions, report.unreadable)
    if kind == "files":
        return read_labelled_files(path, extensions, _label_regex(data), report.unreadable)
    if kind == "idx":
        return read_idx(path)
    lines = read_numbered_lines(path, data.encoding, report)
    if kind == "manifest":
        return read_manifest(path, data, modality, report, lines)
    if kind == "lines":
        label = label_from_name(path.name, _label_regex(data)) if data.label_regex else None
        return [Sample(f"{path}:{number}", label, text, n) for n, (number, text) in enumerate(lines)]
    if kind == "labelled_lines":
        return read_labelled_lines(path, lines, report)
    raise AssertionError(kind)


def detect_format(path: Path, data: DataConfig, text_samples: bool = False) -> str:
    """The recipe's data.format, or what the path suggests. A text file whose name gives no
    label (no data.label_regex) can only be useful with a label on each line: labelled_lines."""
    if data.format != "auto":
        return data.format
    if path.is_dir():
        return "files" if data.label_regex else "folder"
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return "manifest"
    if IDX_PATTERN.search(path.name):
        return "idx"
    if text_samples:
        return "lines" if data.label_regex else "labelled_lines"
    raise CnncliError(
        f"{path}: cannot tell the data format; use a folder, a .csv/.tsv/.jsonl manifest or an idx file,"
        " or set data.format"
    )


def _label_regex(data: DataConfig) -> re.Pattern:
    if not data.label_regex:
        raise CnncliError("data.label_regex: required for this data format (e.g. '^(\\d)_')")
    try:
        pattern = re.compile(data.label_regex)
    except re.error as error:
        raise CnncliError(f"data.label_regex: not a valid regular expression ({error})") from None
    if pattern.groups < 1:
        raise CnncliError("data.label_regex: needs one group in parentheses that captures the label")
    return pattern


def label_from_name(name: str, pattern: re.Pattern) -> str:
    match = pattern.search(name)
    if not match:
        raise CnncliError(f"{name}: data.label_regex {pattern.pattern!r} does not match this file name")
    return match.group(1)


def expand_paths(arguments: Iterable[str], extensions: tuple[str, ...]) -> Iterator[Sample]:
    """Paths, folders (recursively, sorted) and globs -> samples; '-' reads paths from stdin.

    A path that does not exist still yields a sample, so that it gets a row with its error.
    """
    for argument in arguments:
        if argument == "-":
            yield from expand_paths((line.strip() for line in sys.stdin if line.strip()), extensions)
        elif os.path.isdir(argument):  # one stat, no Path: this runs once per line of 100,000 on stdin
            yield from (Sample(str(path)) for path in list_files(Path(argument), extensions))
        elif glob.has_magic(argument) and not os.path.exists(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                yield Sample(argument)
            yield from (Sample(match) for match in matches if Path(match).is_file())
        else:
            yield Sample(argument)


def read_class_folders(root: Path, extensions: Sequence[str], unreadable: list[str] | None = None) -> list[Sample]:
    try:
        classes = sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    except OSError as error:
        raise CnncliError(f"{root}: cannot list this folder ({error.strerror})") from None
    if not classes:
        raise CnncliError(f"{root}: expected one sub-folder per class (or set data.label_regex)")
    samples = []
    for folder in classes:
        samples.extend(Sample(str(path), folder.name, None, n)
                       for n, path in enumerate(list_files(folder, extensions, unreadable)))
    if not samples:
        raise CnncliError(f"{root}: no files with suffix {', '.join(extensions)} in its class folders")
    return samples


def split_folders(path: Path) -> dict[str, Path]:
    """The parts of a folder laid out by split: its sub-folders are train/ and any of val/ (or
    valid/, validation/) and test/, in any case, each holding class folders. Keyed by split
    name; empty for any other folder, so that classes named "train" and "test" that hold the
    files themselves stay classes."""
    parts: dict[str, Path] = {}
    try:
        for child in sorted(path.iterdir()):
            if not child.is_dir() or child.name.startswith("."):
                continue
            part = SPLIT_FOLDERS.get(child.name.lower())
            if part is None or not any(inner.is_dir() for inner in child.iterdir()):
                return {}
            if part in parts:
                raise CnncliError(f"{path}: holds both {parts[part].name}/ and {child.name}/ as the {part} split; "
                                  "keep one")
            parts[part] = child
    except OSError:
        return {}
    return parts if "train" in parts else {}


def read_labelled_files(root: Path, extensions: Sequence[str], pattern: re.Pattern,
                        unreadable: list[str] | None = None) -> list[Sample]:
    files = list(list_files(root, extensions, unreadable)) if root.is_dir() else [root]
    if not files:
        raise CnncliError(f"{root}: no files with suffix {', '.join(extensions)}")
    return [Sample(str(path), label_from_name(path.name, pattern), None, n) for n, path in enumerate(files)]


def read_manifest(path: Path, data: DataConfig, modality: Any, report: ReadReport | None = None,
                  lines: list[tuple[int, str]] | None = None) -> list[Sample]:
    """A CSV/TSV/JSONL table: text rows (a text column, for a modality with `text_samples`) or
    file rows (a path column). Columns the recipe does not name are found by name (the modality's
    `content_columns`, LABEL_COLUMNS), or in a table without a header row by their values; a row
    with a label and no text is skipped and reported, as are lines that are no row."""
    report = report if report is not None else ReadReport()
    lines = lines if lines is not None else read_numbered_lines(path, data.encoding, report)
    names = [str(name).lower() for name in (data.text_column, data.label_column, data.path_column,
                                            *modality.content_columns, *LABEL_COLUMNS)]
    table = read_table(path, lines, data.header, names, data.label_column)
    report.bad_rows.extend(table.bad)
    report.spans.extend(f"{path}: lines {first}-{last}" for first, last in table.spans)
    if table.headerless:
        report.headerless.append(str(path))
    if not table.rows:
        raise CnncliError(f"{path}: the manifest has no rows")
    text_column = _column(path, table, data.text_column, modality.content_columns, "text_column", report) \
        if modality.text_samples else None
    text_mode = text_column is not None
    content_column = text_column if text_mode else _column(path, table, data.path_column, (), "path_column", report)
    label_column = _column(path, table, data.label_column, LABEL_COLUMNS, "label_column", report)
    for column, key in ((content_column, "data.text_column" if modality.text_samples else "data.path_column"),
                        (label_column, "data.label_column")):
        if column not in table.columns:
            raise CnncliError(f"{path}: no column {column!r} (columns: {', '.join(sorted(map(str, table.columns)))}); "
                              f"set {key}")
    samples = []
    for n, (line, row) in enumerate(table.rows):
        value, label = row.get(content_column), row.get(label_column)
        if label in (None, ""):
            raise CnncliError(f"{path}:{line}: empty {label_column!r}")
        if value is None or not str(value).strip():
            if not text_mode:
                raise CnncliError(f"{path}:{line}: empty {content_column!r}")
            report.skipped.append(f"{path}:{line}")
            continue
        if text_mode:
            samples.append(Sample(f"{path}:{line}", str(label), str(value).strip(), n))
        else:
            samples.append(Sample(str((path.parent / str(value)).resolve()), str(label), None, n))
    return samples


def starts_with_data(path: Path, lines: list[tuple[int, str]], modality: Any) -> bool:
    """Whether a table's first row reads as data, not as the names of its columns (data.header: auto)."""
    defaults = [str(DataConfig.__dataclass_fields__[key].default) for key in ("text_column", "label_column",
                                                                             "path_column")]
    return first_row_is_data(path, lines, [*defaults, *modality.content_columns, *LABEL_COLUMNS])


def _column(path: Path, table: Table, wanted: str | int, known: Sequence[str], key: str,
            report: ReadReport) -> str | int | None:
    """The recipe's column: a number counts from 0 (a header row's names in that order); a name
    is used when the table has it or the recipe chose it. A default name the table lacks is
    looked for among `known` names (any case), or in a table without a header row, by its values."""
    default = DataConfig.__dataclass_fields__[key].default
    if isinstance(wanted, int):
        if not 0 <= wanted < len(table.columns):
            raise CnncliError(f"{path}: data.{key}: no column {wanted} (the table has {len(table.columns)}, "
                              "numbered from 0)")
        return table.columns[wanted]
    if table.headerless:
        if wanted != default:
            raise CnncliError(f"{path}: data.{key}: the table has no header row (set data.header: true if it has "
                              f"one), so name its columns by number, e.g. data.{key}: 0")
        report.columns[key] = guess_columns(table)[key]
        return report.columns[key]
    if wanted in table.columns or wanted != default:
        return wanted
    by_name = {str(column).strip().lower(): column for column in table.columns}
    found = next((by_name[name] for name in known if name in by_name), None)
    if found is not None:
        report.columns[key] = found
        return found
    return None if key == "text_column" else wanted


def read_labelled_lines(path: Path, lines: list[tuple[int, str]], report: ReadReport | None = None) -> list[Sample]:
    """"LABEL text" lines (space or tab after the label); a line with a label and no text is skipped
    and reported. A sample's position is its index among the file's non-empty lines, skipped ones
    included, so position rules (every 10th line) count the lines of the file."""
    hint = tab_table_hint(lines) if report is not None else None
    if hint:
        report.hints[str(path)] = hint
    samples = []
    for n, (number, line) in enumerate(lines):
        label, _, text = line.replace("\t", " ", 1).partition(" ")
        if not text.strip():
            if report is None:
                raise CnncliError(f"{path}:{number}: expected 'LABEL text', got {line[:40]!r}")
            report.skipped.append(f"{path}:{number}")
            continue
        samples.append(Sample(f"{path}:{number}", label, text.strip(), n))
    return samples


def refuse_misread_labels(samples: Sequence[Sample], report: ReadReport, where: str) -> None:
    """Refuse training samples where most classes (of MISREAD_CLASSES or more) have one sample:
    their labels were read from the wrong place, as when a table of sentences read as "LABEL
    text" lines makes each sentence's first word its class. The line says what the file looks
    like (ReadReport.hints) and what to set."""
    counts = Counter(sample.label for sample in samples)
    single = [label for label, count in counts.items() if count == 1]
    if len(counts) < MISREAD_CLASSES or len(single) * 2 <= len(counts):
        return
    fallback = "check how labels are read (data.format, data.label_column, data.label_regex)"
    where, hint = next(iter(report.hints.items()), (where, fallback))
    examples = ", ".join(repr(label) for label in single[:3])
    raise CnncliError(f"{where}: {len(single):,} of {len(counts):,} classes have one sample (e.g. {examples}): "
                      f"the labels look misread; {hint}")
