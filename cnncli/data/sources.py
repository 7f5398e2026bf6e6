"""Read samples from where users keep them: class folders, manifests, idx files, text lines.

Every reader returns a list of Sample in a stable order (sorted listings, file order), so that
seeded splits are reproducible. Formats:

- folder:          ROOT/<class>/<file>            (ImageFolder convention; label = folder name)
- files:           ROOT/**/<file>, label from `label_regex` on the file name (`^(\\d)_` for FSDD)
- manifest:        .csv / .tsv / .jsonl with path (or text) and label columns; paths relative to it
- idx:             MNIST-format `*-images-idx3-ubyte[.gz]` with its `*-labels-idx1-ubyte[.gz]`
- lines:           one sample per line; label from `label_regex` on the file name (MR's .pos/.neg)
- labelled_lines:  "LABEL the sentence ..." per line (the SST files); the default for a text
                   file when no `label_regex` takes the label from its name

Real files are untidy, so reading reports instead of refusing where the data allow it
(`ReadReport`): a line with a label and no text is skipped and its line number kept, and with
`data.encoding: auto` each file's encoding is detected (charset-normalizer) and kept.
"""

from __future__ import annotations

import csv
import glob
import gzip
import os
import re
import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnncli.data.sample import Sample
from cnncli.data.schema import DataConfig
from cnncli.errors import CnncliError
from cnncli.files.jsontext import loads

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")
IDX_PATTERN = re.compile(r"idx\d-ubyte(\.gz)?$")
AUTO_ENCODING = "auto"
# Column names a manifest's label is found by when the recipe's name is absent (its text: by the
# modality's own names, Modality.content_columns).
LABEL_COLUMNS = ("label", "class", "category", "target", "sentiment", "intent", "type", "labels", "y")


@dataclass
class ReadReport:
    """What reading found that the user should hear about, kept for the summary and the bundle."""

    skipped: list[str] = field(default_factory=list)  # "file:line" of each line with a label and no text
    encodings: dict[str, str] = field(default_factory=dict)  # file -> encoding detected (data.encoding: auto)
    columns: dict[str, str] = field(default_factory=dict)  # manifest columns found by name: key -> column

    def record(self) -> dict:
        """The JSON-able summary for the bundle (the first 100 skipped lines, and their count)."""
        return {"skipped_lines": len(self.skipped), "skipped": self.skipped[:100], "encodings": dict(self.encodings),
                "columns": dict(self.columns)}

    def notes(self) -> list[str]:
        notes = [f"{path}: encoding {encoding} (detected; data.encoding: auto)"
                 for path, encoding in self.encodings.items()]
        notes += [f"data.{key}: using the column {column!r} (found by name)" for key, column in self.columns.items()]
        if self.skipped:
            shown = ", ".join(self.skipped[:5]) + (", ..." if len(self.skipped) > 5 else "")
            notes.append(f"warning: skipped {len(self.skipped)} line(s) with a label and no text: {shown}")
        return notes


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
    kind = detect_format(path, data, modality.text_samples)
    if kind == "folder":
        return read_class_folders(path, extensions)
    if kind == "files":
        return read_labelled_files(path, extensions, _label_regex(data))
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


def list_files(folder: Path, extensions: Sequence[str]) -> Iterator[Path]:
    """Files under `folder` (recursively, sorted, hidden ones skipped) with one of `extensions`."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in extensions and not path.name.startswith("."):
            yield path


def read_class_folders(root: Path, extensions: Sequence[str]) -> list[Sample]:
    classes = sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    if not classes:
        raise CnncliError(f"{root}: expected one sub-folder per class (or set data.label_regex)")
    samples = []
    for folder in classes:
        samples.extend(Sample(str(path), folder.name, None, n) for n, path in enumerate(list_files(folder, extensions)))
    if not samples:
        raise CnncliError(f"{root}: no files with suffix {', '.join(extensions)} in its class folders")
    return samples


def read_labelled_files(root: Path, extensions: Sequence[str], pattern: re.Pattern) -> list[Sample]:
    files = list(list_files(root, extensions)) if root.is_dir() else [root]
    if not files:
        raise CnncliError(f"{root}: no files with suffix {', '.join(extensions)}")
    return [Sample(str(path), label_from_name(path.name, pattern), None, n) for n, path in enumerate(files)]


def read_manifest(path: Path, data: DataConfig, modality: Any, report: ReadReport | None = None,
                  lines: list[tuple[int, str]] | None = None) -> list[Sample]:
    """A CSV/TSV/JSONL table: text rows (a text column, for a modality with `text_samples`) or
    file rows (a path column). Columns the recipe does not name are found by name (the modality's
    `content_columns`, LABEL_COLUMNS); a row with a label and no text is skipped and reported."""
    report = report if report is not None else ReadReport()
    rows = list(_manifest_rows(path, lines if lines is not None else read_numbered_lines(path, data.encoding, report)))
    if not rows:
        raise CnncliError(f"{path}: the manifest has no rows")
    columns = list(rows[0][1])
    text_column = _column(columns, data.text_column, modality.content_columns, "text_column", report) \
        if modality.text_samples else None
    text_mode = text_column is not None
    content_column = text_column if text_mode else data.path_column
    label_column = _column(columns, data.label_column, LABEL_COLUMNS, "label_column", report)
    for column, key in ((content_column, "data.text_column" if modality.text_samples else "data.path_column"),
                        (label_column, "data.label_column")):
        if column not in columns:
            raise CnncliError(f"{path}: no column {column!r} (columns: {', '.join(sorted(map(str, columns)))}); "
                              f"set {key}")
    samples = []
    for n, (line, row) in enumerate(rows):
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


def _column(columns: list[str], wanted: str, known: Sequence[str], key: str, report: ReadReport) -> str | None:
    """`wanted` when the table has it, else (unless the recipe named another than the default)
    the first column among `known` names (any case) that it has."""
    if wanted in columns or wanted != DataConfig.__dataclass_fields__[key].default:
        return wanted
    by_name = {str(column).strip().lower(): column for column in columns}
    found = next((by_name[name] for name in known if name in by_name), None)
    if found is not None:
        report.columns[key] = found
        return found
    return None if key == "text_column" else wanted


def _manifest_rows(path: Path, lines: list[tuple[int, str]]) -> Iterator[tuple[int, dict]]:
    if path.suffix.lower() == ".jsonl":
        for number, line in lines:
            yield number, json_row(path, number, line)
        return
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    numbers = [number for number, _ in lines]
    reader = csv.DictReader((text for _, text in lines), delimiter=delimiter)
    for row in reader:
        # A quoted field may span lines: a row is named by the line it ends on.
        yield numbers[min(reader.line_num - 1, len(numbers) - 1)], row


def json_row(path: Path, number: int, line: str) -> dict:
    """One line of a JSON-lines manifest: an object, or a one-line error naming the line."""
    row = loads(line, f"{path}:{number}")  # (NaN and Infinity are not JSON)
    if not isinstance(row, dict):
        raise CnncliError(f"{path}:{number}: expected a JSON object per line")
    return row


ENCODING_HINT = "set the file's encoding, e.g. --set data.encoding=latin-1 (or auto)"


def read_lines(path: Path, encoding: str, hint: str = ENCODING_HINT) -> list[str]:
    """Non-empty lines of a text file; a byte the encoding cannot read is a one-line error that
    ends with `hint` (what the user can do about it where the file is read). `encoding` may be
    "auto" (see `detect_encoding`)."""
    return [text for _, text in read_numbered_lines(path, encoding, hint=hint)]


def read_numbered_lines(path: Path, encoding: str, report: ReadReport | None = None,
                        hint: str = ENCODING_HINT) -> list[tuple[int, str]]:
    """(line number from 1, stripped text) of each non-empty line; with encoding "auto" the
    file's encoding is detected and added to `report`."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CnncliError(f"{path}: cannot read ({error.strerror})") from None
    if encoding == AUTO_ENCODING:
        encoding = detect_encoding(raw)
        if report is not None:
            report.encodings[str(path)] = encoding
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        number, column = raw.count(b"\n", 0, error.start) + 1, error.start - raw.rfind(b"\n", 0, error.start)
        raise CnncliError(
            f"{path}:{number}: byte 0x{raw[error.start]:02x} at column {column} is not valid "
            f"{encoding}; {hint}"
        ) from None
    except LookupError:
        raise CnncliError(f"data.encoding: unknown encoding {encoding!r}") from None
    # Lines end at \n, \r\n or \r only: str.splitlines would also cut at U+0085, which is what
    # latin-1 makes of cp1252's ellipsis byte.
    return [(number, line.strip()) for number, line in enumerate(_LINE_END.split(text), start=1) if line.strip()]


_LINE_END = re.compile(r"\r\n|\r|\n")


# Among encodings that read a file equally well, the one most files in the wild use: WHATWG reads
# every "latin-1" web page as cp1252, and MR's reviews are such a file (cp1250 ties on it).
_PREFERRED_ENCODINGS = ("utf_8", "ascii", "cp1252", "latin_1", "iso8859_15")


def detect_encoding(raw: bytes) -> str:
    """The encoding of a file's bytes: UTF-8 when they are valid UTF-8 (a strict check that
    no other encoding's text passes by accident beyond ASCII), else charset-normalizer's guess,
    preferring the common Western encodings among equally good ones."""
    try:
        raw.decode("utf-8")
        return "utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes  # only files that are not UTF-8 pay for importing it

    matches = from_bytes(raw)
    best = matches.best()
    if best is None:
        return "latin-1"  # every byte is a character in latin-1: binary junk still gets a clear reading
    tied = {name for match in matches if (match.chaos, match.coherence) == (best.chaos, best.coherence)
            for name in [match.encoding, *match.could_be_from_charset]}
    return next((name for name in _PREFERRED_ENCODINGS if name in tied), best.encoding)


def read_labelled_lines(path: Path, lines: list[tuple[int, str]], report: ReadReport | None = None) -> list[Sample]:
    """"LABEL text" lines (space or tab after the label); a line with a label and no text is skipped
    and reported. A sample's position is its index among the file's non-empty lines, skipped ones
    included, so position rules (every 10th line) count the lines of the file."""
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


def read_idx(images_path: Path) -> list[Sample]:
    """MNIST-format images with their labels file (found by name); contents are uint8 tensors."""
    images = read_idx_array(images_path)
    labels_path = images_path.with_name(images_path.name.replace("images-idx3", "labels-idx1"))
    if labels_path == images_path or not labels_path.exists():
        raise CnncliError(f"{images_path}: no labels file beside it (expected {labels_path.name})")
    labels = read_idx_array(labels_path)
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise CnncliError(f"{images_path}: expected N images of H x W and N labels, "
                          f"got {tuple(images.shape)} and {tuple(labels.shape)}")
    return [Sample(f"{images_path}#{i}", str(int(labels[i])), images[i], i) for i in range(len(images))]


_IDX_TYPES = {0x08: ("uint8", 1), 0x09: ("int8", 1), 0x0B: (">i2", 2), 0x0C: (">i4", 4),
              0x0D: (">f4", 4), 0x0E: (">f8", 8)}


def read_idx_array(path: Path):
    """An idx file (optionally gzipped) as a torch tensor."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise CnncliError(f"{path}: cannot read idx file ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise CnncliError(f"{path}: not an idx file (bad magic number)")
    dtype, size = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    count = 1
    for dim in shape:
        count *= dim
    body = raw[4 + 4 * ndim:]
    if len(body) != count * size:
        raise CnncliError(f"{path}: truncated idx file ({len(body)} bytes of data, header says {count * size})")
    array = np.frombuffer(body, dtype=dtype).reshape(shape)
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("=")).copy())
