"""Read samples from where users keep them: class folders, manifests, idx files, text lines.

Every reader returns a list of Sample in a stable order (sorted listings, file order), so that
seeded splits are reproducible. Formats:

- folder:          ROOT/<class>/<file>            (ImageFolder convention; label = folder name)
- files:           ROOT/**/<file>, label from `label_regex` on the file name (`^(\\d)_` for FSDD)
- manifest:        .csv / .tsv / .jsonl with path (or text) and label columns; paths relative to it
- idx:             MNIST-format `*-images-idx3-ubyte[.gz]` with its `*-labels-idx1-ubyte[.gz]`
- lines:           one sample per line; label from `label_regex` on the file name (MR's .pos/.neg)
- labelled_lines:  "LABEL the sentence ..." per line (the SST files)
"""

from __future__ import annotations

import csv
import glob
import gzip
import re
import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnncli.config import DataConfig
from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.jsontext import loads

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl")
IDX_PATTERN = re.compile(r"idx\d-ubyte(\.gz)?$")


def read_sources(paths: str | Sequence[str], data: DataConfig, modality: Any) -> list[Sample]:
    """Samples from one or more recipe paths (relative to data.root; globs allowed) for a modality
    (its class or an instance): its `extensions` are the files folders are searched for, and
    with `text_samples` a text file or manifest column may hold the samples themselves."""
    samples: list[Sample] = []
    for path in resolve_paths(paths, data.root):
        samples.extend(read_source(path, data, modality))
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


def read_source(path: Path, data: DataConfig, modality: Any) -> list[Sample]:
    """Samples from one existing path, in the format the recipe names or the path suggests."""
    extensions = modality.extensions
    kind = detect_format(path, data, modality.text_samples)
    if kind == "folder":
        return read_class_folders(path, extensions)
    if kind == "files":
        return read_labelled_files(path, extensions, _label_regex(data))
    if kind == "manifest":
        return read_manifest(path, data, modality.text_samples)
    if kind == "idx":
        return read_idx(path)
    if kind == "lines":
        label = label_from_name(path.name, _label_regex(data)) if data.label_regex else None
        return [Sample(f"{path}:{n + 1}", label, text, n) for n, text in enumerate(read_lines(path, data.encoding))]
    if kind == "labelled_lines":
        return read_labelled_lines(path, data.encoding)
    raise AssertionError(kind)


def detect_format(path: Path, data: DataConfig, text_samples: bool = False) -> str:
    if data.format != "auto":
        return data.format
    if path.is_dir():
        return "files" if data.label_regex else "folder"
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return "manifest"
    if IDX_PATTERN.search(path.name):
        return "idx"
    if text_samples:
        return "lines"
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
        elif Path(argument).is_dir():
            yield from (Sample(str(path)) for path in list_files(Path(argument), extensions))
        elif glob.has_magic(argument) and not Path(argument).exists():
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


def read_manifest(path: Path, data: DataConfig, text_samples: bool = False) -> list[Sample]:
    """A CSV/TSV/JSONL table: text rows (text column present) or file rows (path column)."""
    rows = list(_manifest_rows(path, data.encoding))
    if not rows:
        raise CnncliError(f"{path}: the manifest has no rows")
    columns = set(rows[0][1])
    text_mode = text_samples and data.text_column in columns
    content_column = data.text_column if text_mode else data.path_column
    for column in (content_column, data.label_column):
        if column not in columns:
            key = "data.label_column" if column == data.label_column else (
                "data.text_column" if text_samples else "data.path_column")
            raise CnncliError(
                f"{path}: no column {column!r} (columns: {', '.join(sorted(columns))}); set {key}"
            )
    samples = []
    for n, (line, row) in enumerate(rows):
        value, label = row.get(content_column), row.get(data.label_column)
        if value in (None, "") or label in (None, ""):
            raise CnncliError(f"{path}:{line}: empty {content_column!r} or {data.label_column!r}")
        if text_mode:
            samples.append(Sample(f"{path}:{line}", str(label), str(value), n))
        else:
            samples.append(Sample(str((path.parent / str(value)).resolve()), str(label), None, n))
    return samples


def _manifest_rows(path: Path, encoding: str) -> Iterator[tuple[int, dict]]:
    lines = read_lines(path, encoding)
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(lines, start=1):
            if line.strip():
                yield n, json_row(path, n, line)
        return
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    for n, row in enumerate(reader, start=2):
        yield n, row


def json_row(path: Path, number: int, line: str) -> dict:
    """One line of a JSON-lines manifest: an object, or a one-line error naming the line."""
    row = loads(line, f"{path}:{number}")  # (NaN and Infinity are not JSON)
    if not isinstance(row, dict):
        raise CnncliError(f"{path}:{number}: expected a JSON object per line")
    return row


ENCODING_HINT = "set the file's encoding, e.g. --set data.encoding=latin-1"


def read_lines(path: Path, encoding: str, hint: str = ENCODING_HINT) -> list[str]:
    """Non-empty lines of a text file; a byte the encoding cannot read is a one-line error that
    ends with `hint` (what the user can do about it where the file is read)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CnncliError(f"{path}: cannot read ({error.strerror})") from None
    lines = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode(encoding)
        except UnicodeDecodeError as error:
            raise CnncliError(
                f"{path}:{number}: byte 0x{line[error.start]:02x} at column {error.start + 1} is not valid "
                f"{encoding}; {hint}"
            ) from None
        except LookupError:
            raise CnncliError(f"data.encoding: unknown encoding {encoding!r}") from None
        text = text.strip()
        if text:
            lines.append(text)
    return lines


def read_labelled_lines(path: Path, encoding: str) -> list[Sample]:
    samples = []
    for n, line in enumerate(read_lines(path, encoding)):
        label, _, text = line.partition(" ")
        if not text.strip():
            raise CnncliError(f"{path}:{n + 1}: expected 'LABEL text', got {line[:40]!r}")
        samples.append(Sample(f"{path}:{n + 1}", label, text.strip(), n))
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
