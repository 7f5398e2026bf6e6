"""Reading a whole file that a user gave, with a size limit checked before any byte is read.

`read(n)` sets n bytes aside at once, so the limit is applied to the file's size first: a huge
or lying file costs one line, not its size in memory. Only regular files are read: /dev/zero
never ends, /dev/urandom neither, and opening a FIFO waits for a writer that may never come (deaf
to ^C), so a file is opened without waiting and refused unless it is one. Errors name the file
and what it was for.
"""

from __future__ import annotations

import codecs
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from cnncli.errors import CnncliError


def read_limited(path: str | Path, limit: int, what: str, too_large: str = "") -> bytes:
    """The bytes of `path` (a `what`: "recipe", "audio file"), at most `limit` of them; a larger file
    is an error ending with `too_large` (what to do instead)."""
    with open_regular(path, what) as stream:
        size = os.fstat(stream.fileno()).st_size
        try:
            content = stream.read(min(size, limit) + 1)
        except OSError as error:
            raise CnncliError(f"{path}: cannot read this {what} ({error.strerror})") from None
    if len(content) > limit or size > limit:
        raise CnncliError(f"{path}: larger than {limit:,} bytes; not a {what}{too_large}")
    return content


def open_regular(path: str | Path, what: str, pipes: bool = False) -> BinaryIO:
    """`path` opened for reading in binary, once it is known to be a regular file (or, with
    `pipes`, a FIFO: a stream read a line at a time): opened without waiting (a FIFO with no
    writer would block), then checked, then made blocking again."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise CnncliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CnncliError(f"{path}: is a folder, not a {what}") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the name
        raise CnncliError(f"{path}: cannot read this {what} ({getattr(error, 'strerror', None) or error})") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not (pipes and stat.S_ISFIFO(mode)):
            refuse_irregular(path, mode, what)
        os.set_blocking(descriptor, True)
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


def check_regular(path: str | Path, what: str) -> None:
    """Refuse `path` unless it is a regular file (following links), for readers that open it
    themselves (safetensors, libsndfile); `stat` never waits, even on a FIFO."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CnncliError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:
        raise CnncliError(f"{path}: cannot read this {what} ({getattr(error, 'strerror', None) or error})") from None
    refuse_irregular(path, mode, what)


_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"))


def refuse_irregular(path: str | Path, mode: int, what: str) -> None:
    """A CnncliError naming `path` and its kind unless `mode` (an st_mode) is a regular file's."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise CnncliError(f"{path}: is a folder, not a {what}")
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    raise CnncliError(f"{path}: not a regular file ({kind}); not a {what}")


def bounded_lines(stream: IO, limit: int, name: str) -> Iterator:
    """The lines of a stream (bytes or text), each at most `limit` long: a longer one (a file of
    no line ends) is an error naming `name` and the line, not a line as large as memory."""
    number = 0
    while line := stream.readline(limit + 1):
        number += 1
        if len(line) > limit and line[-1:] not in (b"\n", "\n"):
            raise CnncliError(f"{name}:{number}: a line longer than {limit:,}; not a list of inputs")
        yield line


def is_text_encoding(name: str) -> bool:
    """Whether `name` is a codec that decodes bytes to text."""
    try:
        return codecs.lookup(name)._is_text_encoding  # base64 and rot13 are codecs, not encodings
    except LookupError:
        return False
