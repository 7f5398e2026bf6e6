"""The cache folder: where cnncli keeps what it can recompute (audio features), chosen by the user.

In order: `--cache-dir` (the `folder` given to `cache_folder`), the environment variable
CNNCLI_CACHE_DIR, the platform's cache folder ($XDG_CACHE_HOME/cnncli or ~/.cache/cnncli;
~/Library/Caches/cnncli on macOS; %LOCALAPPDATA%/cnncli/Cache on Windows). Never a recipe or a
bundle: a bundle from elsewhere must not choose where predict writes. `--no-cache` turns it off.

Entries are files named by a SHA-256 hex digest, ROOT/KIND/2 hex/DIGEST.SUFFIX; only such files
count and are ever deleted, so a cache folder set to a busy place loses nothing else. The cache
is capped (CNNCLI_CACHE_MAX_MB, default 2048) and prunes itself least recently used first: a hit
touches its entry, and a process prunes at its first write and after each tenth of the cap.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from cnncli.errors import CnncliError

ENV_FOLDER = "CNNCLI_CACHE_DIR"
ENV_MAX_MB = "CNNCLI_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048
ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.[a-z]+")
LEFTOVER_NAME = re.compile(r"\.[0-9a-f]{64}\.[a-z]+\.tmp-\d+-[0-9a-f]+")  # cnncli.files.atomic's temporaries
LEFTOVER_SECONDS = 3600  # a write takes milliseconds: an hour-old temporary has no writer left

_written_since_prune: dict[Path, int] = {}  # per cache root, in this process


def default_folder() -> Path:
    """CNNCLI_CACHE_DIR, else the platform's per-user cache folder + cnncli."""
    chosen = os.environ.get(ENV_FOLDER)
    if chosen:
        return Path(chosen).expanduser()
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "cnncli"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / "cnncli" / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".cache"  # the XDG spec ignores relative paths
    return base / "cnncli"


def cache_folder(folder: str | Path | None = None, enabled: bool = True) -> Path | None:
    """The cache root for a run: `folder` when given, else `default_folder()`; None when disabled."""
    if not enabled:
        return None
    max_bytes()  # a bad cap is refused now, not at the first write
    return Path(folder).expanduser() if folder else default_folder()


def max_bytes() -> int:
    """The cap, from CNNCLI_CACHE_MAX_MB (megabytes)."""
    text = os.environ.get(ENV_MAX_MB, "").strip()
    if not text:
        return DEFAULT_MAX_MB * 1_000_000
    if not text.isdigit():
        raise CnncliError(f"{ENV_MAX_MB}={text!r}: expected a whole number of megabytes")
    return int(text) * 1_000_000


def entry_path(root: Path, kind: str, key: str, suffix: str) -> Path:
    """Where the entry `key` (a SHA-256 hex digest) of `kind` lives."""
    return root / kind / key[:2] / f"{key}{suffix}"


def touch(path: Path) -> None:
    """Mark an entry as just used, so pruning keeps it longest."""
    try:
        os.utime(path)
    except OSError:
        pass  # a read-only cache still serves hits


def note_written(root: Path, size: int) -> None:
    """Count bytes just written under `root`; prune it at the first write of this process and
    whenever a tenth of the cap has been written since."""
    limit = max_bytes()
    first = root not in _written_since_prune
    _written_since_prune[root] = _written_since_prune.get(root, 0) + size
    if first or _written_since_prune[root] > limit // 10:
        prune(root, limit)
        _written_since_prune[root] = 0


def prune(root: Path, limit: int) -> int:
    """Delete the least recently used entries under `root` until they take at most `limit` bytes;
    returns how many were deleted. Files that are not entries are never touched."""
    entries = []
    for path in root.glob("*/??/*"):
        try:
            status = path.stat()
        except OSError:
            continue  # deleted meanwhile by another run
        if ENTRY_NAME.fullmatch(path.name) and path.parent.name == path.name[:2]:
            entries.append((status.st_mtime, status.st_size, path))
        elif LEFTOVER_NAME.fullmatch(path.name) and time.time() - status.st_mtime > LEFTOVER_SECONDS:
            path.unlink(missing_ok=True)  # an entry being written when its process was killed
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            continue
        total -= size
        removed += 1
    return removed
