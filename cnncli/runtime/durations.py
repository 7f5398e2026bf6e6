"""Durations as people write them (`train.budget: 1h30m`, `--budget 90s`, and back to text), and
how long this process has run (the command's clock starts with it, imports included).

One grammar for reading the recipe's value, checking its range and printing estimates: hours,
minutes and seconds, each optional but in that order, each a whole or decimal number ("1.5h",
"20m", "1h30m", "90s"); a bare number is seconds.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

from cnncli.errors import CnncliError

DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")
UNIT_SECONDS = (3600, 60, 1)
MAX_DURATION = 366 * 24 * 3600.0  # a year: past it, a typo rather than a plan


def parse_duration(text: str | float, key: str = "train.budget") -> float:
    """Seconds in "1h30m", "20m", "90s", "1.5h" or "90"; a CnncliError naming `key` otherwise."""
    written = str(text).strip().lower().replace(" ", "")
    match = DURATION.fullmatch(written)
    if not written or match is None or not any(match.groups()):
        raise CnncliError(f"{key}: {text!r} is not a duration; write it as 90s, 20m or 1h30m")
    seconds = sum(float(part) * unit for part, unit in zip(match.groups(), UNIT_SECONDS) if part)
    if not 0 < seconds <= MAX_DURATION:
        raise CnncliError(f"{key}: {text!r} must be more than 0 seconds and at most a year")
    return seconds


def format_duration(seconds: float) -> str:
    """"1h05m", "4m10s", "42s": the two largest units, rounded up to the second."""
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, seconds_left = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds_left:02d}s"
    return f"{seconds_left}s"


def process_seconds() -> float:
    """Seconds since this process started, from Linux's /proc (0 where there is none): Python's
    start and imports take seconds that a command's wall-clock budget must count."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in ticks after boot
        return max(0.0, float(Path("/proc/uptime").read_text().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return 0.0


def process_start() -> float:
    """When this process started, on time.monotonic's clock."""
    return time.monotonic() - process_seconds()
