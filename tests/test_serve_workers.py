"""`cnncli serve --workers N`: the processes answer from the moment the address is printed, and
GET /metrics counts what every one of them answered (cnncli/serve/supervisor.py, shared_metrics.py);
a bundle they cannot load ends the server with its one-line error, not a loop of restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")

from conftest import REPO  # noqa: E402
from test_serve import BUNDLES, IMAGES, Server  # noqa: E402

from cnncli.serve.shared_metrics import PUBLISH_SECONDS  # noqa: E402


def test_worker_processes_answer_at_once_and_metrics_count_every_process():
    served = Server(str(BUNDLES / "image"), "--workers", "2", "--threads", "1")
    try:  # the address is printed once every process serves: a request sent at once is answered
        status, _, body = served.call("POST", "/predict", IMAGES[0].read_bytes(), "image/png")
        assert status == 200 and json.loads(body)[0]["label"]
        for image in IMAGES[:11]:  # each on a connection of its own: the kernel hands them to either process
            assert served.call("POST", "/predict", image.read_bytes(), "image/png")[0] == 200
        time.sleep(PUBLISH_SECONDS + 0.5)  # every process has published its counters since
        metrics = served.call("GET", "/metrics")[2].decode()
        assert 'cnncli_serve_requests_total{route="/predict",code="200"} 12' in metrics
        assert 'cnncli_serve_inputs_total{model="image"} 12' in metrics
    finally:
        assert served.stop() == 0


def test_a_bundle_the_workers_cannot_load_is_one_line_and_status_2_not_a_restart_loop(tmp_path):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "cnncli", "serve", str(tmp_path), "--workers", "2", "--port", "0"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert str(tmp_path) in result.stderr and "serving" not in result.stdout
    assert time.monotonic() - started < 60
