"""GET /metrics across --workers processes: the server's figures, not those of the one process
that happens to answer the scrape.

Each process writes its counters to a folder the supervisor made (in memory where /dev/shm is),
about once a PUBLISH_SECONDS and when it stops, one file each, replaced atomically; the process
that answers a scrape adds the others' latest files to its own live counters. Another process's
part may be up to PUBLISH_SECONDS old. A process that has ended keeps its counts (counters never
go back when the supervisor replaces a process), but no longer its inputs waiting.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from cnncli.files.atomic import process_alive, write_file
from cnncli.serve.metrics import Metrics

PUBLISH_SECONDS = 1.0


class SharedMetrics:
    """This process's counters, published to `folder`, and the sum over every process's."""

    def __init__(self, folder: Path, metrics: Metrics):
        self.folder, self.metrics = folder, metrics
        self.own = folder / f"{os.getpid()}.json"

    def publish(self) -> None:
        write_file(self.own, json.dumps(self.metrics.snapshot()).encode(), durable=False)

    async def publish_every(self, seconds: float = PUBLISH_SECONDS) -> None:
        """Publish until cancelled (the app's lifespan runs this as a task)."""
        while True:
            await asyncio.sleep(seconds)
            self.publish()

    def text(self) -> str:
        """Prometheus text of every process's counters summed."""
        total = self.metrics.empty()
        total.add(self.metrics.snapshot())
        for path in sorted(self.folder.glob("*.json")):
            if path == self.own:
                continue
            try:
                snapshot = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # removed as the server stops
                continue
            if not (path.stem.isdigit() and process_alive(int(path.stem))):
                snapshot["waiting"] = {}
            total.add(snapshot)
        return total.text()

