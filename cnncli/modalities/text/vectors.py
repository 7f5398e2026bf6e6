"""Pretrained word vectors from a user's file: word2vec text or binary, or GloVe text.

The format is detected, not declared: word2vec files start with a "COUNT DIMENSION" header and
are binary when the line after it is not DIMENSION numbers; GloVe files have no header. Only
the rows of the vocabulary's tokens are kept, so a large file costs one pass, not its size in
memory. Tokens the file lacks start at uniform(-0.25, 0.25) as in Kim (2014); padding is zero.
Vectors are read once, at training time; the bundle then carries the embedding weights.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from cnncli.errors import CnncliError
from cnncli.modalities.text.vocabulary import PAD_ID, Vocabulary

UNKNOWN_RANGE = 0.25  # Kim (2014): unknown words ~ U[-a, a], a chosen to match word2vec's variance


def detect_format(path: Path) -> str:
    """'word2vec-binary', 'word2vec-text' or 'glove' from the first two lines of the file."""
    with open_vectors(path) as handle:
        first = handle.readline()
        second = handle.readline()
    header = first.split()
    if len(header) == 2 and all(part.isdigit() for part in header):
        dimension = int(header[1])
        try:
            fields = second.decode("utf-8").split()
            [float(value) for value in fields[1:]]
        except (UnicodeDecodeError, ValueError):
            return "word2vec-binary"
        return "word2vec-text" if len(fields) == dimension + 1 else "word2vec-binary"
    return "glove"


def load_vectors(path: str | Path, vocabulary: Vocabulary, dimension: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """A (len(vocabulary), dimension) embedding matrix and how many tokens the file covered.

    A token matches a file word exactly, or failing that by lower case ("Good" for "good").
    """
    path = Path(path).expanduser()
    kind = detect_format(path)
    rows = iter_binary(path) if kind == "word2vec-binary" else iter_text(path, skip_header=kind == "word2vec-text")
    matrix = (torch.rand(len(vocabulary), dimension, generator=generator) * 2 - 1) * UNKNOWN_RANGE
    matrix[PAD_ID] = 0
    exact: set[int] = set()
    folded: set[int] = set()
    for where, word, values in rows:
        index = vocabulary.index.get(word)
        is_exact = index is not None
        if index is None:
            index = vocabulary.index.get(word.lower())
        if index is None or index == PAD_ID or index in exact or (not is_exact and index in folded):
            continue
        vector = values()
        if len(vector) != dimension:
            raise CnncliError(
                f"{where}: {len(vector)}-dimensional vector, but data.text.embedding_dim is {dimension}; "
                f"set --set data.text.embedding_dim={len(vector)}"
            )
        matrix[index] = torch.from_numpy(vector)
        (exact if is_exact else folded).add(index)
    return matrix, len(exact | folded)


def open_vectors(path: Path):
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise CnncliError(f"data.text.vectors: {path}: no such file") from None
    except OSError as error:
        raise CnncliError(f"data.text.vectors: {path}: cannot read ({error.strerror})") from None


def iter_text(path: Path, skip_header: bool) -> Iterator[tuple[str, str, Callable[[], np.ndarray]]]:
    """(file:line, word, parse-the-vector) per line; the vector is parsed only when wanted."""
    with open_vectors(path) as handle:
        for number, line in enumerate(handle, start=1):
            if skip_header and number == 1:
                continue
            word, _, rest = line.rstrip(b"\r\n").partition(b" ")
            if not rest:
                continue
            where = f"{path}:{number}"
            yield where, word.decode("utf-8", errors="replace"), lambda rest=rest, where=where: _parse(rest, where)


def _parse(text: bytes, where: str) -> np.ndarray:
    try:
        return np.array(text.split(), dtype=np.float32)
    except ValueError:
        raise CnncliError(f"{where}: expected a word and numbers separated by spaces") from None


def iter_binary(path: Path) -> Iterator[tuple[str, str, Callable[[], np.ndarray]]]:
    """word2vec's C binary: a text header, then per word 'WORD ' and DIMENSION float32 values."""
    with open_vectors(path) as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        header_end = data.find(b"\n")
        count, dimension = (int(part) for part in data[:header_end].split())
        width = 4 * dimension
        position = header_end + 1
        for number in range(count):
            space = data.find(b" ", position)
            if space < 0 or space + 1 + width > len(data):
                raise CnncliError(f"{path}: truncated word2vec binary file (word {number + 1} of {count})")
            word = data[position:space].strip(b"\n").decode("utf-8", errors="replace")
            start = space + 1
            position = start + width
            yield (f"{path}: word {number + 1}", word,
                   lambda start=start: np.frombuffer(data[start:start + width], dtype="<f4").copy())
