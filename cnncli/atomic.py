"""Writes that land whole or not at all: every file and folder cnncli writes goes through here.

A file is written to a temporary sibling, flushed to disk (fsync), then renamed over its name;
a folder (a bundle) is built beside its target and swapped in with one atomic exchange where the
system has one (Linux's renameat2), so at no moment is there no bundle under the name. New files
and folders get the permissions the user's umask allows, like any other program's.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def temporary_name(target: Path, kind: str = "tmp") -> Path:
    """A fresh hidden sibling of `target`: .NAME.tmp-PID-RANDOM (so leftovers are easy to spot)."""
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def write_file(path: str | Path, content: bytes, durable: bool = True) -> None:
    """Write `content` to `path` atomically (`durable=False`: skip the fsyncs, for a cache whose
    entries can be recomputed)."""
    with open_file(path, "wb", durable=durable) as stream:
        stream.write(content)


@contextmanager
def open_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = "",
              errors: str | None = None, durable: bool = True) -> Iterator[IO]:
    """A stream whose content appears under `path` only when the block ends without an error."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(target)
    binary = "b" in mode
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with open(handle, mode, encoding=None if binary else encoding, newline=None if binary else newline,
                  errors=None if binary else errors) as stream:
            yield stream
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.replace(temporary, target)
        if durable:
            sync_folder(target.parent)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """An empty folder to fill; when the block ends without an error it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_name(target)
    os.mkdir(staging, 0o777)  # the umask applies
    try:
        yield staging
        for item in staging.iterdir():
            if item.is_file():
                sync_file(item)
        sync_folder(staging)
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(new: Path, target: Path) -> None:
    """Move folder `new` to `target`. An existing `target` is exchanged with `new` in one step
    where the system can (then deleted); elsewhere it is renamed aside first."""
    if not target.exists():
        os.replace(new, target)
    elif _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old folder
    else:
        old = temporary_name(target, "old")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    sync_folder(target.parent)


def sync_file(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def sync_folder(path: Path) -> None:
    """fsync a folder, so a rename inside it survives a power cut (not possible everywhere)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems cannot sync folders; the rename is still atomic
    finally:
        os.close(handle)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(second))
