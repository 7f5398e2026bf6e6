"""`cnncli serve` (issue 29): a real server on a free loopback port, in a subprocess, asked over
real sockets. Answers equal predict's for the same bytes, concurrent requests share forward
passes, every bad request gets its 4xx and a JSON error naming what is wrong, and SIGTERM or ^C
lets the request in flight finish before the process exits 0."""

from __future__ import annotations

import base64
import http.client
import json
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import REPO
from hostile import float_wav, png_header
from typer.testing import CliRunner

from cnncli.cli.app import app

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")


runner = CliRunner()
BUNDLES = REPO / "tests" / "fixtures" / "bundles-v1"
IMAGES = sorted((REPO / "sample_data" / "images").rglob("*.png"))[:12]
RECORDINGS = sorted((REPO / "sample_data" / "audio").glob("*.wav"))[:4]
SENTENCES = ["a gripping, funny film", "dull and overlong", "not bad at all [really]"]
LIMITS = ["--max-wait-ms", "100", "--max-body-mb", "1", "--max-inputs", "8", "--read-timeout", "2"]


class Server:
    """`cnncli serve ARGS --port 0` in a subprocess; the port is read from the line it prints."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen([sys.executable, "-m", "cnncli", "serve", *args, "--port", "0"], cwd=REPO,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], 120)
        line = self.process.stdout.readline() if ready else ""
        found = re.search(r"at http://127\.0\.0\.1:(\d+)/", line)
        if not found:
            self.process.kill()
            raise AssertionError(f"the server did not start: {line!r} {self.process.stderr.read()}")
        self.port = int(found.group(1))

    def call(self, method: str, path: str, body: bytes | None = None, kind: str | None = None):
        """(status, headers, body) of one request on a new connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request(method, path, body=body, headers={"Content-Type": kind} if kind else {})
        response = connection.getresponse()
        answer = response.status, {key.lower(): value for key, value in response.getheaders()}, response.read()
        connection.close()
        return answer

    def rows(self, path: str, body: bytes, kind: str) -> list[dict]:
        status, _, answer = self.call("POST", path, body, kind)
        assert status == 200, answer
        return json.loads(answer)

    def stop(self, number: int = signal.SIGTERM) -> int:
        self.process.send_signal(number)
        try:
            return self.process.wait(timeout=60)
        finally:
            self.process.stdout.close()
            self.process.stderr.close()


@pytest.fixture(scope="module")
def server():
    # one process, so that /metrics counts at once what it answered (across --workers processes
    # counts arrive within a second: test_worker_processes_...)
    served = Server(str(BUNDLES / "image"), str(BUNDLES / "audio"), str(BUNDLES / "text"), *LIMITS, "--workers", "1")
    yield served
    assert served.stop() == 0


def multipart(files: list[tuple[str, bytes]], fields: list[tuple[str, str]] = ()) -> tuple[bytes, str]:
    boundary = "cnncli-test-boundary-7d1f"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
              for key, value in fields]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def predicted(monkeypatch, kind: str, folder: Path, *args) -> list[dict]:
    """`cnncli predict` rows (jsonl) of the `kind` bundle, run in `folder` so that files are named
    as the uploads are."""
    monkeypatch.chdir(folder)
    result = runner.invoke(app, ["predict", str(BUNDLES / kind), *map(str, args), "--format", "jsonl",
                                 "--workers", "0"])
    assert result.exit_code in (0, 1), result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def response(connection: socket.socket) -> tuple[int, bytes]:
    """(status, body) of the answer that arrives on a raw socket."""
    answer = http.client.HTTPResponse(connection)
    answer.begin()
    return answer.status, answer.read()


def batch_sizes(server: Server, model: str) -> tuple[int, int]:
    """(forward passes, passes of more than one input) from /metrics."""
    text = server.call("GET", "/metrics")[2].decode()
    count = int(re.search(rf'cnncli_serve_batch_size_count{{model="{model}"}} (\d+)', text).group(1))
    single = int(re.search(rf'cnncli_serve_batch_size_bucket{{model="{model}",le="1"}} (\d+)', text).group(1))
    return count, count - single


# -- routes ----------------------------------------------------------------------------------------


def test_health_models_metrics_and_the_page_answer(server):
    status, _, body = server.call("GET", "/health")
    assert status == 200 and json.loads(body) == {"status": "ok", "models": ["image", "audio", "text"]}
    listing = json.loads(server.call("GET", "/models")[2])["models"]
    assert [model["name"] for model in listing] == ["image", "audio", "text"]
    text_model = json.loads(server.call("GET", "/models/text")[2])
    assert text_model["labels"] == ["negative", "positive"] and text_model["reads"]["sentences"]
    assert {"preprocessing", "calibration", "metrics"} <= set(text_model) and "test" in text_model["metrics"]
    status, headers, metrics = server.call("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'cnncli_serve_requests_total{route="/health",code="200"} 1' in metrics.decode()
    status, headers, page = server.call("GET", "/")
    assert status == 200 and "connect-src 'self'" in headers["content-security-policy"]
    assert b"cnncli serve" in page and not re.search(rb"(src|href)=\"?https?:", page)


def test_uploaded_images_get_the_rows_predict_writes_for_their_files(server, monkeypatch):
    expected = predicted(monkeypatch, "image", IMAGES[0].parent, *[path.name for path in IMAGES[:4]], "--top-k", 3)
    body, kind = multipart([(path.name, path.read_bytes()) for path in IMAGES[:4]])
    assert server.rows("/models/image/predict?top_k=3", body, kind) == expected
    raw = server.rows("/models/image/predict?top_k=3", IMAGES[0].read_bytes(), "image/png")
    assert raw == [{**expected[0], "input": "body"}]


def test_recordings_and_sentences_get_the_rows_predict_writes(server, monkeypatch):
    expected = predicted(monkeypatch, "audio", RECORDINGS[0].parent, *[path.name for path in RECORDINGS], "--top-k", 2)
    body, kind = multipart([(path.name, path.read_bytes()) for path in RECORDINGS])
    assert server.rows("/models/audio/predict?top_k=2", body, kind) == expected
    raw = server.rows("/models/audio/predict?top_k=2", RECORDINGS[1].read_bytes(), "audio/wav")
    assert raw == [{**expected[1], "input": "body"}]
    expected = predicted(monkeypatch, "text", REPO, *SENTENCES, "--threshold", "0.51")
    sentences = json.dumps({"inputs": SENTENCES}).encode()
    assert server.rows("/models/text/predict?threshold=0.51", sentences, "application/json") == expected
    assert [row["label"] for row in expected].count("unknown") >= 1
    every = server.rows("/models/text/predict?top_k=99", sentences, "application/json")
    assert [len(row["top"]) for row in every] == [2, 2, 2]  # as many as there are labels
    lines = "\n".join(SENTENCES).encode()
    assert server.rows("/models/text/predict?threshold=0.51", lines, "text/plain") == expected


def test_segment_true_gives_the_events_predict_segment_finds(server, monkeypatch, tmp_path):
    pieces = [soundfile.read(path, dtype="float32") for path in RECORDINGS[:3]]
    rate = pieces[0][1]
    silence = np.random.default_rng(0).normal(0, 1e-4, rate // 2).astype("float32")  # a quiet room
    soundfile.write(tmp_path / "three.wav", np.concatenate([part for audio, _ in pieces for part in (silence, audio)]
                                                           + [silence]), rate)
    expected = predicted(monkeypatch, "audio", tmp_path, "three.wav", "--segment")
    body, kind = multipart([("three.wav", (tmp_path / "three.wav").read_bytes())])
    rows = server.rows("/models/audio/predict?segment=true", body, kind)
    assert rows == expected and rows and all(row["end"] > row["start"] for row in rows)


def test_explain_answers_a_png_json_with_the_row_and_the_explainer_page(server, monkeypatch):
    expected = predicted(monkeypatch, "image", IMAGES[0].parent, IMAGES[0].name)[0]
    body, kind = multipart([(IMAGES[0].name, IMAGES[0].read_bytes())])
    status, headers, png = server.call("POST", "/models/image/explain", body, kind)
    assert status == 200 and headers["content-type"] == "image/png" and png.startswith(b"\x89PNG")
    assert json.loads(headers["x-cnncli-prediction"]) == expected
    status, _, answer = server.call("POST", "/models/image/explain?format=json", body, kind)
    explained = json.loads(answer)
    assert explained["prediction"] == expected and explained["gradcam"]["class"] == expected["label"]
    assert base64.b64decode(explained["gradcam"]["png"]).startswith(b"\x89PNG")
    sentence = json.dumps({"inputs": [SENTENCES[0]]}).encode()
    status, headers, page = server.call("POST", "/models/text/explain?format=html", sentence, "application/json")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert SENTENCES[0].encode() in page and b"Grad-CAM" in page and b"data:image/png;base64," in page


# -- batching --------------------------------------------------------------------------------------


def test_concurrent_requests_share_forward_passes_and_each_gets_its_own_answer(server, monkeypatch):
    expected = predicted(monkeypatch, "image", IMAGES[0].parent, *[path.name for path in IMAGES])
    before = batch_sizes(server, "image")
    answers: dict[int, list] = {}
    ready = threading.Barrier(len(IMAGES))

    def ask(index: int) -> None:
        body, kind = multipart([(IMAGES[index].name, IMAGES[index].read_bytes())])
        ready.wait(timeout=60)  # sent together, as clients at the same moment do
        answers[index] = server.rows("/models/image/predict", body, kind)

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(IMAGES))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for index, row in enumerate(expected):  # a pass of N inputs sums in another order than a pass of 1: the
        [got] = answers[index]                 # last digit may differ, as predict's own rows do between chunks
        assert {**got, "score": None, "top": None} == {**row, "score": None, "top": None}
        assert got["score"] == pytest.approx(row["score"], abs=2e-6)
        assert [(t["label"], pytest.approx(t["score"], abs=2e-6)) for t in got["top"]] == \
            [(t["label"], t["score"]) for t in row["top"]]
    passes, shared = (now - then for now, then in zip(batch_sizes(server, "image"), before))
    assert passes < len(IMAGES) and shared >= 1


# -- bad requests ----------------------------------------------------------------------------------

PNG = IMAGES[0].read_bytes()
NINE = multipart([(f"{index}.png", PNG) for index in range(9)])


@pytest.mark.parametrize("method, path, body, kind, status, message", [
    ("POST", "/models/nothing/predict", PNG, "image/png", 404, "unknown model 'nothing' (serving: image, audio, text)"),
    ("GET", "/nowhere", None, None, 404, "no route '/nowhere'"),
    ("GET", "/models/image/predict", None, None, 405, "GET is not allowed"),
    ("POST", "/predict", PNG, "image/png", 400, "serving 3 models (image, audio, text): POST to /models/NAME/predict"),
    ("POST", "/models/image/predict", b"<html></html>", "text/html", 415, "Content-Type text/html: this model reads"),
    ("POST", "/models/image/predict", PNG, None, 415, "no Content-Type"),
    ("POST", "/models/image/predict", b'{"inputs": ["x"]}', "application/json", 415, "not sentences"),
    ("POST", "/models/image/predict", PNG, "multipart/form-data; boundary=zz", 400, "malformed multipart"),
    ("POST", "/models/image/predict", PNG, "multipart/form-data", 400, "malformed multipart"),
    ("POST", "/models/text/predict", b'{"inputs": ["x"', "application/json", 400, "not valid JSON"),
    ("POST", "/models/text/predict", b'{"inputs": [1]}', "application/json", 422, "inputs[0]: expected a string"),
    ("POST", "/models/text/predict", b'["x"]', "application/json", 422, 'expected {"inputs"'),
    ("POST", "/models/text/predict", b'{"inputs": []}', "application/json", 400, "holds no input"),
    ("POST", "/models/text/predict", json.dumps({"inputs": ["a"] * 9}).encode(), "application/json", 413,
     "more than 8 inputs in one request (--max-inputs)"),
    ("POST", "/models/image/predict", NINE[0], NINE[1], 413, "more than 8 inputs"),
    ("POST", "/models/image/predict?top_k=0", PNG, "image/png", 400, "top_k: a whole number"),
    ("POST", "/models/image/predict?threshold=nan", PNG, "image/png", 400, "threshold: a probability"),
    ("POST", "/models/image/predict?topk=3", PNG, "image/png", 400, "unknown query parameter 'topk'"),
    ("POST", "/models/image/predict?segment=true", PNG, "image/png", 400, "cannot be cut into events"),
    ("POST", "/models/image/explain", NINE[0], NINE[1], 413, "more than 8 inputs"),
    ("POST", "/models/image/explain?format=svg", PNG, "image/png", 400, "format: one of png, json, html"),
    ("POST", "/models/image/explain?layer=conv99", PNG, "image/png", 422, "conv99"),
    ("POST", "/models/image/explain", png_header(100_000, 100_000), "image/png", 422, "body: not a readable image"),
])
def test_a_bad_request_gets_its_4xx_and_a_json_error_naming_what_is_wrong(server, method, path, body, kind, status,
                                                                          message):
    got, headers, answer = server.call(method, path, body, kind)
    assert got == status and headers["content-type"] == "application/json"
    assert message in json.loads(answer)["error"]


def test_hostile_files_and_empty_text_are_rows_with_their_errors_as_predict_gives(server):
    nan = float_wav([float("nan")])
    body, kind = multipart([("lie.png", png_header(100_000, 100_000)), ("empty.png", b""), ("ok.png", PNG),
                            ("notes.png", b"not a picture at all")])
    rows = server.rows("/models/image/predict", body, kind)
    assert [row["input"] for row in rows] == ["lie.png", "empty.png", "ok.png", "notes.png"]
    assert [row["error"] is None for row in rows] == [False, False, True, False]
    assert rows[0]["error"].startswith("lie.png: not a readable image") and "cnncli-serve-" not in json.dumps(rows)
    rows = server.rows("/models/audio/predict", *multipart([("nan.wav", nan)]))
    assert "nan.wav: holds samples that are not finite" in rows[0]["error"]
    rows = server.rows("/models/text/predict", json.dumps({"inputs": ["", "good"]}).encode(), "application/json")
    assert rows[0]["error"] == "inputs[0]: holds no text" and rows[1]["error"] is None


def test_a_body_declared_over_the_limit_is_refused_before_it_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(b"POST /models/image/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 1048577\r\nExpect: 100-continue\r\n\r\n")  # as curl asks
        status, answer = response(connection)
    assert status == 413 and "(1048577 bytes) is over the server's limit of 1 MB" in json.loads(answer)["error"]


def test_a_chunked_body_past_the_limit_is_refused_once_it_passes_it(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(b"POST /models/image/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"0" * 65536
        for _ in range(17):  # 1 MB and a chunk
            connection.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        status, answer = response(connection)
    assert status == 413 and "over the server's limit" in json.loads(answer)["error"]


def test_a_stalled_upload_gets_408_and_a_truncated_one_harms_nothing(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(b"POST /models/image/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(PNG) + PNG[:50])
        started = time.monotonic()
        status, answer = response(connection)
    assert status == 408 and "did not arrive within 2 s" in json.loads(answer)["error"]
    assert 1.5 < time.monotonic() - started < 20
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
            connection.sendall(b"POST /models/image/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                               b"Content-Length: %d\r\n\r\n" % len(PNG) + PNG[:50])
    assert server.call("GET", "/health")[0] == 200
    assert server.rows("/models/image/predict", PNG, "image/png")[0]["error"] is None
    assert not re.search(r'code="5\d\d"', server.call("GET", "/metrics")[2].decode())


# -- the end ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_accepting_finishes_the_request_in_flight_and_exits_0(number, workers):
    served = Server(str(BUNDLES / "image"), "--workers", workers)
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as connection:
        connection.sendall(b"POST /models/image/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(PNG) + PNG[:100])
        time.sleep(0.5)  # the request is in flight: its body half there
        served.process.send_signal(number)
        time.sleep(1.0)
        with pytest.raises(OSError):  # no longer accepting
            socket.create_connection(("127.0.0.1", served.port), timeout=5).close()
        connection.sendall(PNG[100:])
        status, answer = response(connection)
    assert status == 200 and json.loads(answer)[0]["error"] is None
    assert served.process.wait(timeout=60) == 0


def test_a_port_in_use_is_one_line_and_status_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "cnncli", "serve", str(BUNDLES / "image"), "--port", str(port)],
                                capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"--host 127.0.0.1 --port {port}: cannot listen there" in result.stderr


def test_a_thread_count_out_of_range_is_one_line_naming_the_flag():
    result = subprocess.run([sys.executable, "-m", "cnncli", "serve", str(BUNDLES / "image"), "--threads", "-1"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "--threads: 0 (auto) to 1024, got -1" in result.stderr


def test_the_command_line_loads_neither_torch_nor_starlette_to_start():
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import cnncli.cli.app"], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0 and "cnncli.cli.serving" in result.stderr
    assert not re.search(r"\b(torch|starlette|uvicorn)\b", result.stderr)



# -- the page, in a real browser -------------------------------------------------------------------


def page_session(browser, url: str) -> tuple[str, str, list]:
    """(target, session, events) of a tab that has loaded `url`."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    events: list[dict] = []
    for domain in ("Network", "Runtime", "Log", "Page", "DOM"):
        browser.send(f"{domain}.enable", session=session, events=events)
    browser.send("Page.navigate", {"url": url}, session=session, events=events)
    browser.wait_for("Page.loadEventFired", events)
    return target, session, events


def evaluate(browser, session: str, events: list, expression: str):
    reply = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session,
                         events=events)
    return reply["result"].get("value")


def answered(browser, session: str, events: list) -> dict:
    """What the page shows once its answer is in (or after 60 s): status line, bars, picture."""
    deadline = time.monotonic() + 60
    shown = "({status: document.getElementById('status').textContent, " \
            "bars: document.querySelectorAll('#top .bar').length, " \
            "hidden: document.getElementById('answer').hidden, " \
            "picture: document.getElementById('gradcam').src.slice(0, 22)})"
    while time.monotonic() < deadline:
        seen = evaluate(browser, session, events, shown)
        if not seen["hidden"] or seen["status"].startswith(("error", "inputs")):
            return seen
        time.sleep(0.2)
    return seen


@pytest.mark.slow
def test_the_page_shows_top_classes_and_gradcam_for_a_dropped_image_and_a_typed_sentence(server, tmp_path):
    from headless_chromium import Chromium, _error, _request, chromium_path

    if chromium_path() is None:
        pytest.skip("needs chromium (apt-get install -y chromium)")
    origin = f"http://127.0.0.1:{server.port}"
    with Chromium(tmp_path / "profile") as browser:
        target, session, events = page_session(browser, origin + "/")
        file_input = browser.send("Runtime.evaluate", {"expression": "document.getElementById('file')"},
                                  session=session, events=events)["result"]["objectId"]
        browser.send("DOM.setFileInputFiles", {"files": [str(IMAGES[0])], "objectId": file_input}, session=session,
                     events=events)
        image = answered(browser, session, events)
        evaluate(browser, session, events, "document.getElementById('model').value = 'text'; "
                 "document.getElementById('model').dispatchEvent(new Event('change')); "
                 "document.getElementById('answer').hidden = true; "
                 f"document.getElementById('sentence').value = {json.dumps(SENTENCES[0])}; "
                 "document.getElementById('ask').click()")
        sentence = answered(browser, session, events)
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session, events=events)
        browser.send("Target.closeTarget", {"targetId": target}, events=events)
    assert image == {"status": f"{IMAGES[0].name}: {image['status'].split(': ')[1]}", "bars": 5, "hidden": False,
                     "picture": "data:image/png;base64,"}
    assert sentence["status"].startswith(f"{SENTENCES[0]}: ") and sentence["bars"] == 2 and not sentence["hidden"]
    assert [error for event in events for error in _error(event)] == []
    requests = [url for event in events for url in _request(event)]
    assert requests and all(url.startswith((origin, "data:")) for url in requests)
    assert len(base64.b64decode(shot["data"])) > 10_000
