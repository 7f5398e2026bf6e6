"""Writes that land whole or not at all: every file and folder cnncli writes goes through here.

A file is written to a temporary sibling, flushed to disk (fsync), then renamed over its name;
a folder (a bundle) is built beside its target and swapped in with one atomic exchange where the
system has one (Linux's renameat2), so at no moment is there no bundle under the name. New files
and folders get the permissions the user's umask allows, like any other program's.

Temporaries are hidden siblings named .NAME.tmp-PID-RANDOM (.NAME.old-PID-RANDOM for a folder
being replaced). A process killed with SIGKILL cannot remove its own, so the next write to the
same name removes those whose process is gone. `check_writable` tells before long work starts
whether its result could be written at all. A write the system refuses for want of room (a
full disk, a quota, a file size limit) is one line naming the target and what was kept, which
is always what was there before (`out_of_room`); a cache's entry (`durable=False`) raises the
OSError for the cache to skip the entry.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cnncli.errors import CnncliError

NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a full disk, a full quota, a file size limit


def out_of_room(error: OSError, target: Path, kept: str) -> CnncliError | None:
    """`error` as one line naming `target` and what was `kept`, if the system refused the write
    for want of room; None for any other error."""
    if error.errno not in NO_ROOM:
        return None
    reason = os.strerror(error.errno)
    return CnncliError(f"{target}: {reason[0].lower()}{reason[1:]} while writing it; {kept}")


def kept_message(target: Path) -> str:
    """What a failed replacement of `target` leaves: the previous one, or nothing."""
    return f"{target} is kept as it was" if target.exists() else "nothing was written"


def temporary_name(target: Path, kind: str = "tmp") -> Path:
    """A fresh hidden sibling of `target`: .NAME.tmp-PID-RANDOM (so leftovers are easy to spot)."""
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporaries of `target` left by processes that no longer run (killed before
    they could clean up); returns what was removed. Those of a live process are its work in progress."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:tmp|old|probe)-(\d+)-[0-9a-f]+")
    removed = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        match = pattern.fullmatch(sibling.name)
        if not match or process_alive(int(match.group(1))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process of that id runs (this one does; another user's counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # another user's process, or a number no process can have
    return True


def check_writable(path: str | Path, what: str, folder: bool = False) -> None:
    """Fail now, naming `what` (a flag), if `path` could not be written when the work is done: a
    folder where a file is wanted or the reverse, a parent that is a file, a place the user may
    not write to. Missing parent folders are created, as the write would."""
    target = Path(path)
    if not folder and target.is_dir():
        raise CnncliError(f"{what} {target}: is a folder; give a file name")
    if folder and target.exists() and not target.is_dir():
        raise CnncliError(f"{what} {target}: exists and is not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = temporary_name(target, "probe")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as error:
        where = error.filename or target.parent
        raise CnncliError(f"{what} {target}: cannot write there ({where}: {error.strerror})") from None


def check_outputs(*outputs: tuple[str | Path | None, str, bool]) -> None:
    """`check_writable` for each (path, flag, is a folder) of a command's outputs that was given
    (a None path was not asked for)."""
    for path, what, folder in outputs:
        if path is not None:
            check_writable(path, what, folder=folder)


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
    if durable:  # (a cache prunes its own leftovers: listing its folder on every entry would cost)
        remove_stale_temporaries(target)
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
    except OSError as error:
        refused = out_of_room(error, target, kept_message(target)) if durable else None  # (a cache skips its own)
        if refused is None:
            raise
        raise refused from None
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """An empty folder to fill; when the block ends without an error it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    staging = temporary_name(target)
    os.mkdir(staging, 0o777)  # the umask applies
    try:
        yield staging
        for item in staging.iterdir():
            if item.is_file():
                sync_file(item)
        sync_folder(staging)
        replace_folder(staging, target)
    except OSError as error:
        refused = out_of_room(error, target, kept_message(target))
        if refused is None:
            raise
        raise refused from None
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


def give_umask_permissions(path: Path) -> None:
    """Set a file written by a library that picks its own mode (safetensors: 0600) to what a file
    the user creates would get: 0666 less the umask."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    try:
        with open("/proc/self/status") as status:  # Linux: read without changing it
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


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
