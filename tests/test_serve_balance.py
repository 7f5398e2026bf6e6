"""--workers processes keep their busy connections even (cnncli/serve/balance.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient  # noqa: E402

from cnncli.serve.app import Service  # noqa: E402
from cnncli.serve.balance import WINDOW, Balance, excess  # noqa: E402
from cnncli.serve.metrics import Metrics  # noqa: E402
from cnncli.serve.settings import Settings  # noqa: E402
from cnncli.serve.shared_metrics import SharedMetrics  # noqa: E402


@pytest.mark.parametrize("mine, others, closes", [
    (4, [0], 2), (3, [1], 1), (2, [2], 0), (1, [0], 0), (18, [14], 0), (8, [0, 0, 4], 5), (0, [4], 0), (5, [], 0)])
def test_a_process_closes_connections_down_to_its_share_only_when_clearly_over_it(mine, others, closes):
    assert excess(mine, others) == closes


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_closed_connections_are_the_next_to_ask_and_leave_the_count():
    clock = Clock()
    balance = Balance(clock)
    for port in range(4):
        assert not balance.closes(("127.0.0.1", port))
    assert balance.busy() == 4
    balance.rebalance([0])
    assert [balance.closes(("127.0.0.1", port)) for port in range(4)] == [True, True, False, False]
    assert balance.busy() == 2 and not balance.closes(("127.0.0.1", 0)) and balance.busy() == 3
    clock.now += WINDOW + 0.1  # none asked since: idle connections do not count
    assert balance.busy() == 0
    assert not balance.closes(None)  # no client address (not over a socket): never closed


def test_processes_learn_each_others_counts_from_their_published_files(tmp_path):
    crowded, idle = Balance(), Balance()
    for port in range(4):
        crowded.closes(("127.0.0.1", port))
    sides = [SharedMetrics(tmp_path, Metrics(["text"], 64), balance) for balance in (crowded, idle)]
    sides[1].own = tmp_path / "1.json"  # pid 1 (init) is alive; the other side is this process
    for side in reversed(sides):
        side.tick()
    assert crowded.to_close == 2 and idle.to_close == 0


def test_a_response_closes_its_connection_when_the_process_has_too_many(tmp_path):
    service = Service({}, Settings(), metrics_folder=tmp_path)
    with TestClient(service.application()) as client:
        assert "close" not in client.get("/health").headers.get("connection", "")
        service.balance.to_close = 1
        assert client.get("/health").headers["connection"] == "close"
        assert "close" not in client.get("/health").headers.get("connection", "")
    one_process = Service({}, Settings())
    assert one_process.balance is None
