"""Text files read whole as numbered lines, in the recipe's encoding or one detected per file.

A byte the encoding cannot read is one line naming the file, the line and the byte; the file is
read with a size bound (cnncli.limits.MAX_TEXT_BYTES) and only if it is a regular file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cnncli.errors import CnncliError
from cnncli.files.reading import read_limited
from cnncli.limits import MAX_TEXT_BYTES

AUTO_ENCODING = "auto"
ENCODING_HINT = "set the file's encoding, e.g. --set data.encoding=latin-1 (or auto)"


def read_lines(path: Path, encoding: str, hint: str = ENCODING_HINT) -> list[str]:
    """Non-empty lines of a text file; a byte the encoding cannot read is a one-line error that
    ends with `hint` (what the user can do about it where the file is read). `encoding` may be
    "auto" (see `detect_encoding`)."""
    return [text for _, text in read_numbered_lines(path, encoding, hint=hint)]


def read_numbered_lines(path: Path, encoding: str, report: Any = None,
                        hint: str = ENCODING_HINT) -> list[tuple[int, str]]:
    """(line number from 1, stripped text) of each non-empty line; with encoding "auto" the
    file's encoding is detected and added to `report`."""
    raw = read_limited(path, MAX_TEXT_BYTES, "text file")
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
