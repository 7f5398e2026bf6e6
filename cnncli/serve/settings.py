"""What `cnncli serve` is told: where to listen, how to batch, and the limits of one request."""

from __future__ import annotations

from dataclasses import dataclass

from cnncli.errors import CnncliError

MAX_AUTO_WORKERS = 8  # processes --workers 0 starts at most: each holds every model in its memory
MAX_BATCH_LIMIT = 4096  # inputs per forward pass: more buys nothing and risks a huge activation


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"  # loopback unless told otherwise: a server is opened to a network on purpose
    port: int = 8000
    workers: int = 0  # server processes, each with the models and its own batcher; 0: one per core (CPU)
    max_batch: int = 64  # inputs gathered into one forward pass
    max_wait_ms: float = 20.0  # with a batch in the network, how long the next may wait for it (idle: never)
    max_body_mb: float = 16.0  # a request body over this is refused (413)
    max_inputs: int = 256  # inputs in one request (413 beyond)
    read_timeout: float = 30.0  # seconds a request body may take to arrive (408 beyond)
    device: str = "auto"
    threads: int = 0  # torch threads of each process's forward passes; 0: the cores shared among --workers

    def processes(self) -> int:
        """--workers, or (0) one per core, at most MAX_AUTO_WORKERS, where the models run on the
        CPU; one on a GPU, where a process's threads keep it busy (batcher.py)."""
        if self.workers:
            return self.workers
        from cnncli.runtime.device import pick_device, usable_cores

        return 1 if pick_device(self.device).type != "cpu" else min(usable_cores(), MAX_AUTO_WORKERS)

    def forward_threads(self, processes: int) -> int:
        """--threads, or the machine's cores shared among the server's processes."""
        from cnncli.runtime.device import usable_cores

        return self.threads or max(1, usable_cores() // processes)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def check(self) -> "Settings":
        """Each value in its range, or a CnncliError naming the flag."""
        problems = [(not 0 <= self.port <= 65535, f"--port: 0 to 65535, got {self.port}"),
                    (self.workers < 0, f"--workers: 0 (one per core) or more, got {self.workers}"),
                    (not 1 <= self.max_batch <= MAX_BATCH_LIMIT,
                     f"--max-batch: 1 to {MAX_BATCH_LIMIT}, got {self.max_batch}"),
                    (not 0 <= self.max_wait_ms <= 10_000, f"--max-wait-ms: 0 to 10000, got {self.max_wait_ms}"),
                    (not 0 < self.max_body_mb <= 4096, f"--max-body-mb: above 0, at most 4096, got {self.max_body_mb}"),
                    (self.max_inputs < 1, f"--max-inputs: 1 or more, got {self.max_inputs}"),
                    (not 0 <= self.threads <= 1024, f"--threads: 0 (auto) to 1024, got {self.threads}"),
                    (not 0 < self.read_timeout <= 3600, f"--read-timeout: above 0, at most 3600 s, "
                                                        f"got {self.read_timeout}")]
        for wrong, message in problems:
            if wrong:
                raise CnncliError(message)
        return self
