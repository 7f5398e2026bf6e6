"""Keeping the --workers processes' connections even.

Each process listens on a socket of its own on the port (SO_REUSEPORT), and the kernel hashes
each new connection to one of them. A client that keeps a few connections open for long (four
keep-alive connections sending 64 images a request) can have them all land on one process,
which then serves them on one core while the other idles: one time in eight for four connections
on two processes, and half the throughput (bench/serve.py measured 0.47x predict's files/s in
such a run, 0.91x and 1.05x in the others).

So each process counts the connections that sent it a request within the last WINDOW seconds and
publishes the count beside its metrics (shared_metrics.py). A process with more than its share
(at least two more than the least busy process, and a quarter more than the mean) answers that
many of its connections' next requests with `Connection: close`; the client opens a new
connection for its next request (as HTTP clients do), and the kernel hashes that one afresh.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable

WINDOW = 1.0  # seconds: a connection that sent a request within it counts


def excess(mine: int, others: list[int]) -> int:
    """How many of this process's `mine` busy connections to close, given the other processes'
    counts: down to the mean (rounded up) when this process has at least two more than the least
    busy one and a quarter more than the mean; else none."""
    if not others:
        return 0
    mean = (mine + sum(others)) / (1 + len(others))
    if mine - min(others) < 2 or mine <= 1.25 * mean:
        return 0
    return mine - math.ceil(mean)


class Balance:
    """One process's busy connections (by the client address of each request) and how many of
    them are still to be closed."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.seen: dict[Hashable, float] = {}  # client address -> when it last sent a request
        self.to_close = 0

    def closes(self, client: Hashable | None) -> bool:
        """Count a request from `client`; whether its answer should close the connection."""
        if client is None:
            return False
        if self.to_close > 0:
            self.to_close -= 1
            self.seen.pop(client, None)  # it is leaving: no longer this process's to count
            return True
        self.seen[client] = self.clock()
        return False

    def busy(self) -> int:
        """Connections that sent a request within the last WINDOW seconds."""
        since = self.clock() - WINDOW
        for client in [client for client, last in self.seen.items() if last < since]:
            del self.seen[client]
        return len(self.seen)

    def rebalance(self, others: list[int]) -> None:
        """Set how many connections to close from the other processes' busy counts (this
        replaces what was still to close: the counts it came from are a window old)."""
        self.to_close = excess(self.busy(), others)
