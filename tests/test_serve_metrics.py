"""GET /metrics's counters: summed across --workers processes through their published snapshots."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("starlette")

from cnncli.serve.metrics import Metrics  # noqa: E402
from cnncli.serve.shared_metrics import SharedMetrics  # noqa: E402


def busy(requests: int, batch: int) -> Metrics:
    metrics = Metrics(["image"], 64)
    for _ in range(requests):
        metrics.request("/predict", 200, 0.004)
    metrics.request("/predict", 415, 0.0005)
    metrics.batch("image", batch, 1)
    metrics.queue("image", 3)
    return metrics


def figure(text: str, name: str) -> float:
    return float(next(line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")))


def test_snapshots_add_up_to_one_server():
    first, second = busy(5, 4), busy(2, 64)
    total = first.empty()
    total.add(json.loads(json.dumps(first.snapshot())))  # what a process publishes is JSON
    total.add(json.loads(json.dumps(second.snapshot())))
    text = total.text()
    assert figure(text, 'cnncli_serve_requests_total{route="/predict",code="200"}') == 7
    assert figure(text, "cnncli_serve_request_errors_total") == 2
    assert figure(text, 'cnncli_serve_request_seconds_bucket{route="/predict",le="0.005"}') == 9
    assert figure(text, 'cnncli_serve_request_seconds_count{route="/predict"}') == 9
    assert figure(text, 'cnncli_serve_inputs_total{model="image"}') == 68
    assert figure(text, 'cnncli_serve_input_errors_total{model="image"}') == 2
    assert figure(text, 'cnncli_serve_queue_inputs{model="image"}') == 6
    assert figure(text, 'cnncli_serve_batch_size_bucket{model="image",le="4"}') == 1
    assert figure(text, 'cnncli_serve_batch_size_count{model="image"}') == 2
    assert first.text() != text and figure(first.text(), "cnncli_serve_request_errors_total") == 1


def test_the_answering_process_adds_the_others_latest_files(tmp_path):
    mine, alive, ended = busy(1, 1), busy(10, 8), busy(100, 16)
    (tmp_path / f"{os.getppid()}.json").write_text(json.dumps(alive.snapshot()))
    (tmp_path / "999999999.json").write_text(json.dumps(ended.snapshot()))  # no such process: its queue is gone
    (tmp_path / ".999999999.json.tmp-1-ab").write_text("{half a fi")  # another's write in progress
    shared = SharedMetrics(tmp_path, mine)
    shared.publish()
    assert json.loads(shared.own.read_text()) == mine.snapshot()
    mine.request("/health", 200, 0.001)  # after publishing: the answering process counts its own live
    text = shared.text()
    assert figure(text, 'cnncli_serve_requests_total{route="/predict",code="200"}') == 111
    assert figure(text, 'cnncli_serve_requests_total{route="/health",code="200"}') == 1
    assert figure(text, 'cnncli_serve_queue_inputs{model="image"}') == 6  # its own 3 and the live process's 3
