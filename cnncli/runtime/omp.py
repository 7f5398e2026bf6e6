"""OpenMP's wait policy for torch's CPU threads, chosen before torch is imported (it reads it once).

GNU OpenMP's threads spin a while when they wait. On a quiet machine that is the fast choice: on
2 cores, lecture-3's training step ran at 1,518 samples/s with 2 spinning threads and 1,189 with
passive ones. With another process busy on the cores, spinning threads stall each other: 417
against 730 beside a spinning process, 392 against 810 beside another 2-thread torch job
(`bench/threads.py`, docs/BENCHMARKS.md). So cnncli lets the threads spin only when the machine
is idle as it starts, by its load average, and makes them passive otherwise; a policy the user
set (OMP_WAIT_POLICY) is left alone.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

BUSY_LOAD = 0.5  # 1-minute load average from which another process is taken to be running


def wait_policy(environment: MutableMapping[str, str], load: float | None) -> str | None:
    """The OMP_WAIT_POLICY to set (None: leave the runtime's default, spinning): PASSIVE when
    the machine is busy or its load is unknown, unless the user chose a policy."""
    if environment.get("OMP_WAIT_POLICY"):
        return None
    if load is not None and load < BUSY_LOAD:
        return None
    return "PASSIVE"


def choose_wait_policy(environment: MutableMapping[str, str] = os.environ) -> None:
    """Set OMP_WAIT_POLICY in `environment` by `wait_policy` and this machine's load average."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        load = None
    policy = wait_policy(environment, load)
    if policy:
        environment["OMP_WAIT_POLICY"] = policy
