"""GET /metrics across --workers processes: the server's figures, not those of the one process
that happens to answer the scrape.

Each process writes its counters to a folder the supervisor made (in memory where /dev/shm is),
about once a PUBLISH_SECONDS and when it stops, one file each, replaced atomically; the process
that answers a scrape adds the others' latest files to its own live counters. Another process's
part may be up to PUBLISH_SECONDS old. A process that has ended keeps its counts (counters never
go back when the supervisor replaces a process), but no longer its inputs waiting. The files also
carry each process's busy connections, from which each keeps its share (balance.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from cnncli.files.atomic import process_alive, write_file
from cnncli.serve.balance import Balance
from cnncli.serve.metrics import Metrics

PUBLISH_SECONDS = 1.0


class SharedMetrics:
    """This process's counters, published to `folder`, and the sum over every process's."""

    def __init__(self, folder: Path, metrics: Metrics, balance: Balance | None = None):
        self.folder, self.metrics, self.balance = folder, metrics, balance
        self.own = folder / f"{os.getpid()}.json"

    def publish(self) -> None:
        snapshot = self.metrics.snapshot()
        if self.balance is not None:
            snapshot["connections"] = self.balance.busy()
        write_file(self.own, json.dumps(snapshot).encode(), durable=False)

    async def publish_every(self, seconds: float = PUBLISH_SECONDS) -> None:
        """Publish, and rebalance connections, until cancelled (the app's lifespan runs this as a task)."""
        while True:
            await asyncio.sleep(seconds)
            self.tick()

    def tick(self) -> None:
        self.publish()
        if self.balance is not None:
            self.balance.rebalance([snapshot.get("connections", 0) for alive, snapshot in self.others() if alive])

    def others(self) -> list[tuple[bool, dict]]:
        """The other processes' latest snapshots, each with whether that process is still running."""
        found = []
        for path in sorted(self.folder.glob("*.json")):
            if path == self.own:
                continue
            try:
                snapshot = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # removed as the server stops
                continue
            found.append((path.stem.isdigit() and process_alive(int(path.stem)), snapshot))
        return found

    def text(self) -> str:
        """Prometheus text of every process's counters summed."""
        total = self.metrics.empty()
        total.add(self.metrics.snapshot())
        for alive, snapshot in self.others():
            if not alive:
                snapshot["waiting"] = {}
            total.add(snapshot)
        return total.text()

