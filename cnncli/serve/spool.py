"""Uploaded files in a private temporary folder (in memory where /dev/shm is) while a modality reads them.

A modality reads a sample from its locator, a path (that is how `predict` reads files, so an
upload decoded this way gives exactly predict's answer). Each upload is written to a folder only
this server can read, under a name of its own making (a counter and a suffix the modality
knows), and removed once it is decoded; nothing a request names is ever opened. Error messages
name the file by its path, so `named` puts the upload's own name back in their place.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

MEMORY_FOLDER = "/dev/shm"  # where there is one: a file there costs a quarter of one on disk (150 us, not 600)


@dataclass(frozen=True)
class Upload:
    """One input as a request carries it: a file's bytes and its name, or (`text`) a sentence."""

    name: str
    data: bytes = b""
    suffix: str = ""  # the file type it claims, among the modality's own (".png"), or ""
    text: str | None = None


def private_folder(prefix: str) -> Path:
    """A new folder only this user can read (mode 0700), in memory where /dev/shm is."""
    memory = MEMORY_FOLDER if os.path.isdir(MEMORY_FOLDER) and os.access(MEMORY_FOLDER, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=memory))


class Spool:
    """A private temporary folder, removed with everything in it by `close`."""

    def __init__(self):
        self.folder = private_folder("cnncli-serve-")
        self.counter = itertools.count()

    def write(self, upload: Upload) -> Path:
        path = self.folder / f"{next(self.counter)}{upload.suffix}"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(upload.data)
        return path

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def named(text: str | None, path: Path, name: str) -> str | None:
    """`text` (an input's name or error) with the spooled file's path replaced by the upload's name."""
    return None if text is None else text.replace(str(path), name)


def remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
