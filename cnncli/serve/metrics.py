"""What GET /metrics says, in Prometheus's text format (version 0.0.4): requests and their
statuses, inputs and the rows that came back with an error, latency and batch size histograms,
and the inputs waiting. Every label value comes from a fixed set (a route's template, a status
code, a served model's name), so the counters stay a few hundred lines however the server is used.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # seconds
PREFIX = "cnncli_serve"


class Histogram:
    """Counts per upper bound (Prometheus's `le`), a sum and a count."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds, self.counts, self.total, self.count = bounds, [0] * len(bounds), 0.0, 0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.bounds):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.bounds, self.counts):
            running += count
            out.append(f'{name}_bucket{{{labels}{"," if labels else ""}le="{bound:g}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{"," if labels else ""}le="+Inf"}} {self.count}')
        return out + [f"{name}_sum{{{labels}}} {self.total:.6f}", f"{name}_count{{{labels}}} {self.count}"]

    def state(self) -> list:
        return [list(self.counts), self.total, self.count]

    def add(self, state: list) -> None:
        """Another process's counts of the same bounds (`state()`), added to these."""
        counts, total, count = state
        if len(counts) == len(self.counts):
            self.counts = [mine + theirs for mine, theirs in zip(self.counts, counts)]
            self.total += total
            self.count += count


class Metrics:
    """The server's counters; updated from the event loop and the batcher's threads alike."""

    def __init__(self, models: list[str], max_batch: int):
        self.lock = threading.Lock()
        self.max_batch = max_batch
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.inputs = dict.fromkeys(models, 0)
        self.input_errors = dict.fromkeys(models, 0)
        self.waiting = dict.fromkeys(models, 0)
        bounds = tuple(sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, max_batch}))
        self.batches = {name: Histogram(bounds) for name in models}

    def empty(self) -> "Metrics":
        """Counters at zero, for the same models and batch bounds."""
        return Metrics(list(self.inputs), self.max_batch)

    def request(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[route, status] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, model: str, size: int, errors: int) -> None:
        with self.lock:
            self.batches[model].observe(size)
            self.inputs[model] += size
            self.input_errors[model] += errors

    def queue(self, model: str, change: int) -> None:
        with self.lock:
            self.waiting[model] += change

    def snapshot(self) -> dict:
        """Every counter as JSON values, for the other --workers processes (shared_metrics.py)."""
        with self.lock:
            return {"requests": [[route, status, count] for (route, status), count in self.requests.items()],
                    "latency": {route: histogram.state() for route, histogram in self.latency.items()},
                    "inputs": dict(self.inputs), "input_errors": dict(self.input_errors),
                    "waiting": dict(self.waiting),
                    "batches": {model: histogram.state() for model, histogram in self.batches.items()}}

    def add(self, snapshot: dict) -> None:
        """Another process's counters (`snapshot()`), summed into these."""
        with self.lock:
            for route, status, count in snapshot["requests"]:
                self.requests[route, status] += count
            for route, state in snapshot["latency"].items():
                self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).add(state)
            for mine, theirs in ((self.inputs, snapshot["inputs"]), (self.input_errors, snapshot["input_errors"]),
                                 (self.waiting, snapshot["waiting"])):
                for model, value in theirs.items():
                    if model in mine:
                        mine[model] += value
            for model, state in snapshot["batches"].items():
                if model in self.batches:
                    self.batches[model].add(state)

    def text(self) -> str:
        with self.lock:
            lines = [f"# HELP {PREFIX}_requests_total HTTP requests answered, by route and status code.",
                     f"# TYPE {PREFIX}_requests_total counter"]
            lines += [f'{PREFIX}_requests_total{{route="{route}",code="{status}"}} {count}'
                      for (route, status), count in sorted(self.requests.items())]
            lines += [f"# HELP {PREFIX}_request_errors_total Requests answered with a 4xx or 5xx status.",
                      f"# TYPE {PREFIX}_request_errors_total counter",
                      f"{PREFIX}_request_errors_total {sum(c for (_, s), c in self.requests.items() if s >= 400)}"]
            lines += [f"# HELP {PREFIX}_request_seconds Time from a request's arrival to its answer.",
                      f"# TYPE {PREFIX}_request_seconds histogram"]
            for route, histogram in sorted(self.latency.items()):
                lines += histogram.lines(f"{PREFIX}_request_seconds", f'route="{route}"')
            lines += self._per_model()
        return "\n".join(lines) + "\n"

    def _per_model(self) -> list[str]:
        lines = []
        for name, kind, what, values in (
                ("inputs_total", "counter", "Inputs predicted.", self.inputs),
                ("input_errors_total", "counter", "Inputs answered with an error row (undecodable, empty).",
                 self.input_errors),
                ("queue_inputs", "gauge", "Inputs waiting for a forward pass.", self.waiting)):
            lines += [f"# HELP {PREFIX}_{name} {what}", f"# TYPE {PREFIX}_{name} {kind}"]
            lines += [f'{PREFIX}_{name}{{model="{quoted(model)}"}} {value}' for model, value in sorted(values.items())]
        lines += [f"# HELP {PREFIX}_batch_size Inputs per forward pass.", f"# TYPE {PREFIX}_batch_size histogram"]
        for model, histogram in sorted(self.batches.items()):
            lines += histogram.lines(f"{PREFIX}_batch_size", f'model="{quoted(model)}"')
        return lines


def quoted(value: str) -> str:
    """A label value as the text format escapes it (a folder name may hold a quote)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
