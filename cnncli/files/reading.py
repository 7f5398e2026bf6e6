"""Reading a whole file that a user gave, with a size limit checked before any byte is read.

`read(n)` sets n bytes aside at once, so the limit is applied to the file's size first: a huge
or lying file costs one line, not its size in memory. Errors name the file and what it was for.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from cnncli.errors import CnncliError


def read_limited(path: str | Path, limit: int, what: str, too_large: str = "") -> bytes:
    """The bytes of `path` (a `what`: "recipe", "audio file"), at most `limit` of them; a larger file
    is an error ending with `too_large` (what to do instead)."""
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            content = stream.read(min(size, limit) + 1)
    except FileNotFoundError:
        raise CnncliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CnncliError(f"{path}: is a folder, not a {what}") from None
    except OSError as error:
        raise CnncliError(f"{path}: cannot read this {what} ({error.strerror})") from None
    if len(content) > limit or size > limit:
        raise CnncliError(f"{path}: larger than {limit:,} bytes; not a {what}{too_large}")
    return content


def is_text_encoding(name: str) -> bool:
    """Whether `name` is a codec that decodes bytes to text."""
    try:
        return codecs.lookup(name)._is_text_encoding  # base64 and rot13 are codecs, not encodings
    except LookupError:
        return False
