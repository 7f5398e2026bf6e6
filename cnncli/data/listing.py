"""Listing the files of a folder of data: sorted, hidden files skipped, links to folders followed
once each, never into the system's own folders, and a folder that cannot be read reported and
skipped rather than a traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from cnncli.errors import CnncliError

# Folders of the kernel's own, not of anyone's data: /proc/self/root leads back to / (a walk of the
# whole machine), and many entries refuse to be read.
SYSTEM_FOLDERS = ("/proc", "/sys")


def refuse_system_folder(path: Path) -> None:
    """A data path in the kernel's folders (SYSTEM_FOLDERS) is a mistake, refused before any walk."""
    real = os.path.realpath(path)
    system = next((folder for folder in SYSTEM_FOLDERS if real == folder or real.startswith(folder + "/")), None)
    if system is not None:
        raise CnncliError(f"{path}: a folder of the system ({system}), not data; check data.root and the data paths")


def list_files(folder: Path, extensions: Sequence[str], unreadable: list[str] | None = None) -> Iterator[Path]:
    """Files under `folder` (recursively, sorted, hidden ones skipped) with one of `extensions`.
    Links to folders are followed once each (a link to a folder above is no loop), never into
    the system's folders (/proc/self/root is all of /); a folder that cannot be listed is added
    to `unreadable` and skipped."""
    found, seen, sink = [], set(), unreadable if unreadable is not None else []
    for top, folders, files in os.walk(folder, followlinks=True,
                                       onerror=lambda error: sink.append(f"{error.filename} ({error.strerror})")):
        try:
            status = os.stat(top)
        except OSError:
            folders.clear()
            continue
        if (status.st_dev, status.st_ino) in seen:
            folders.clear()
            continue
        seen.add((status.st_dev, status.st_ino))
        folders[:] = [name for name in folders if not _system_link(os.path.join(top, name))]
        found.extend(Path(top, name) for name in files
                     if os.path.splitext(name)[1].lower() in extensions and not name.startswith(".")
                     and os.path.isfile(os.path.join(top, name)))
    yield from sorted(found)


def _system_link(path: str) -> bool:
    """Whether `path` is a link into the system's folders (SYSTEM_FOLDERS)."""
    if not os.path.islink(path):
        return False
    real = os.path.realpath(path)
    return any(real == folder or real.startswith(folder + "/") for folder in SYSTEM_FOLDERS)
