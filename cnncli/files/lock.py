"""One writer per output: a lock on a bundle folder or an --output file while a command writes it.

Two `cnncli train --out same/` started together would both train and both print a bundle, and
only the last to finish would be there. So a writer takes an exclusive flock(2) on a hidden file
beside its target, `.NAME.lock`, before it checks or writes anything, and holds it to the end.
The file sits next to the target, not inside it: a bundle folder is replaced by another folder in
one step (cnncli.files.atomic), which would take a lock inside it away with the old folder.

The holder writes its process id into the file, so a second writer is refused in one line that
names it. The kernel releases a flock when its process ends, however it ends, so a lock left by
a killed process is free to the next writer, which takes the file over. The holder removes the
file when done (while still holding the lock; a writer that opened the removed file sees that
it is no longer the one under the name and tries again). Where the system has no flock
(Windows), there is no lock.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnncli.errors import CnncliError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None


def lock_name(target: Path) -> Path:
    """Where the lock of `target` lives: `.NAME.lock` in the same folder."""
    return target.with_name(f".{target.name}.lock")


@contextmanager
def writer_lock(target: str | Path | None, what: str) -> Iterator[None]:
    """Hold the lock of `target` (a bundle folder, an output file; None or '-': stdout, no lock)
    for the block; refuse, naming `what` (a flag) and the holder's process id, if another
    process holds it."""
    if target is None or str(target) == "-" or fcntl is None:
        yield
        return
    path = lock_name(Path(target))
    handle = _acquire(path, Path(target), what)
    try:
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # (a full disk) the lock is held all the same; a refused writer then names no process id
    try:
        yield
    finally:
        try:
            path.unlink(missing_ok=True)  # before unlocking: see the module's docstring
        finally:
            os.close(handle)


def _acquire(path: Path, target: Path, what: str) -> int:
    """An open descriptor of `path` holding its flock, once `path` is still that file."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as error:  # as cnncli.files.atomic.check_writable says it
            raise CnncliError(f"{what} {target}: cannot write there ({error.filename}: {error.strerror})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            os.close(handle)
            raise CnncliError(f"{what} {target}: another cnncli {holder} is writing there; wait for it to end, "
                              f"or choose another {what}") from None
        except OSError as error:  # a file system without locks: go on unlocked, as before
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                os.close(handle)
                raise
            return handle
        if _still_named(handle, path):
            return handle
        os.close(handle)  # the holder removed it as we opened it: take the file under the name now


def _still_named(handle: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(handle)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(handle: int) -> str:
    """'process (pid 1234)', the id the holder wrote into the lock file; 'process' before it has."""
    try:
        text = os.pread(handle, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "process"
    return f"process (pid {text})" if text.isdigit() else "process"
