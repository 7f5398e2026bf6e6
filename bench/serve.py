"""`cnncli serve` under load, on loopback, the client on the same machine as the server.

    python bench/serve.py                                        # the issue's full run
    python bench/serve.py --requests 5000 --good 10000 --hostile 1000 --time-cap 60   # a short run

One server (`python -m cnncli serve IMAGE TEXT`, default settings) is started in a subprocess;
a client written on asyncio streams (keep-alive HTTP/1.1, no HTTP library in the way) then runs,
one after the other, each phase bounded by a number of requests and by --time-cap seconds:

1. single-image requests (one MNIST-size PNG as the body) from 32 concurrent clients:
   requests/s, p50 and p99 latency (goal: >= 1,000/s, p99 <= 100 ms);
2. the same requests at a fixed 200/s, each latency counted from its scheduled start, so a slow
   answer delays nothing and hides nothing (goal: p99 <= 20 ms);
3. requests of 64 PNGs each (multipart) from 4 clients: files/s, beside `cnncli predict --lines`
   on the same files run right after (goal: >= 0.8x predict's files/s, steady rate after the
   first row; its rate with start-up is printed too);
4. one-sentence JSON requests to the text model from 32 clients (goal: >= 2,000/s);
5. --hostile bad requests mixed into --good good ones (32 clients): lying and broken PNGs,
   wrong types, malformed multipart and JSON, bodies over the limit, unknown models and
   parameters. Goal: no 5xx, every good answer equal to that image's answer alone (labels, and
   scores to the last printed digit: see same_answer; exact-byte differences are counted), and the
   server's resident memory at the end within 10% of what it was after the first tenth.

The bundles and PNGs are prepared as bench/predict.py prepares them (lecture-3 on MNIST digits,
sst2 as one network; a few training steps: quality does not change the speed), under --work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict import REPO, cnncli_environment, sentences, train_bundle, write_pngs  # noqa: E402  (bench/predict.py)

BOUNDARY = "bench-boundary-5e1a"
WAIT = 60.0  # seconds an answer may take before its request counts as lost


class Connection:
    """One keep-alive HTTP/1.1 connection; opened again after the server closes it."""

    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def ask(self, raw: bytes, again: bool = True) -> tuple[int, bytes]:
        """(status, body); a kept-alive connection the server closed meanwhile is opened again
        once, as HTTP clients do; (0, b"") when the request itself gets no answer."""
        reused = self.writer is not None
        if not reused:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            self.writer.write(raw)
            async with asyncio.timeout(WAIT):
                head = await self.reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as error:
            self.close()
            if reused and again and not isinstance(error, TimeoutError) and not getattr(error, "partial", b""):
                return await self.ask(raw, again=False)
            return 0, b""
        status = int(head[9:12])
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
        try:
            async with asyncio.timeout(WAIT):
                body = await self.reader.readexactly(length)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            self.close()
            return 0, b""
        if re.search(rb"connection: close", head, re.IGNORECASE):
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def request(path: str, body: bytes, kind: str | None, extra: bytes = b"") -> bytes:
    typed = f"Content-Type: {kind}\r\n".encode() if kind else b""
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\n".encode() + typed + extra
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def multipart(files: list[tuple[str, bytes]]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
             "Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def lying_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def hostile_requests(png: bytes) -> list[bytes]:
    image = "/models/image/predict"
    return [request(image, lying_png(), "image/png"), request(image, png[:len(png) // 2], "image/png"),
            request(image, os.urandom(300), "image/png"), request(image, png, "text/html"),
            request(image, b"--x\r\ngarbage", f"multipart/form-data; boundary={BOUNDARY}"),
            request(image, png, None), request("/models/nothing/predict", png, "image/png"),
            request(image + "?top_k=-1", png, "image/png"), request("/models/text/predict", b'{"inputs": [', "application/json"),
            request("/models/text/predict", b'{"inputs": [""]}', "application/json"),
            f"POST {image} HTTP/1.1\r\nHost: bench\r\nContent-Type: image/png\r\nContent-Length: 999999999\r\n\r\n"
            .encode()]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def closed_loop(port: int, raws: list[bytes], clients: int, cap: float) -> dict:
    """Each of `clients` connections sends its next request as soon as its last is answered."""
    latencies, statuses, pending = [], {}, iter(enumerate(raws))
    started = time.perf_counter()

    async def client() -> None:
        connection = Connection(port)
        for _, raw in pending:
            if time.perf_counter() - started > cap:
                break
            sent = time.perf_counter()
            status, _ = await connection.ask(raw)
            latencies.append(time.perf_counter() - sent)
            statuses[status] = statuses.get(status, 0) + 1
        connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {"requests": len(latencies), "wall_s": round(wall, 2), "per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(1000 * percentile(latencies, 0.5), 2), "p99_ms": round(1000 * percentile(latencies, 0.99), 2),
            "statuses": statuses}


async def fixed_rate(port: int, raw: bytes, rate: float, count: int, connections: int = 64) -> dict:
    """`count` requests at `rate`/s, each timed from when it was due (open loop)."""
    idle = [Connection(port) for _ in range(connections)]
    latencies, statuses = [], {}
    start = time.perf_counter() + 0.05

    async def one(index: int) -> None:
        due = start + index / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        connection = idle.pop() if idle else Connection(port)
        status, _ = await connection.ask(raw)
        latencies.append(time.perf_counter() - due)
        statuses[status] = statuses.get(status, 0) + 1
        idle.append(connection)

    await asyncio.gather(*(one(index) for index in range(count)))
    for connection in idle:
        connection.close()
    return {"requests": count, "rate": rate, "p50_ms": round(1000 * percentile(latencies, 0.5), 2),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 2), "statuses": statuses}


def same_answer(body: bytes, expected: bytes) -> bool:
    """The same labels in the same order, each score within the last printed digit: a forward
    pass of N inputs sums in another order than a pass of one, as `cnncli predict`'s rows differ
    between a chunk of 50 and one file alone (e.g. 0.869902 and 0.869901)."""
    ours, theirs = json.loads(body)[0], json.loads(expected)[0]
    return [t["label"] for t in ours["top"]] == [t["label"] for t in theirs["top"]] and ours["label"] == \
        theirs["label"] and all(abs(a["score"] - b["score"]) <= 2e-6 for a, b in zip(ours["top"], theirs["top"]))


def resident_kib(pid: int) -> int:
    """Resident memory of the server: its process and those it started (--workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(child) for child in children.read_text().split()] if children.exists() else []
    with open(f"/proc/{pid}/status") as status:
        own = int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))
    return own + sum(resident_kib(kid) for kid in kids)


async def hostile_mix(port: int, pid: int, pngs: list[bytes], good: int, hostile: int, cap: float) -> dict:
    """Good single-image requests with hostile ones mixed in; each good answer is checked."""
    expected = {}
    connection = Connection(port)
    for index, png in enumerate(pngs):
        expected[index] = (await connection.ask(request("/models/image/predict", png, "image/png")))[1]
    connection.close()
    bad = hostile_requests(pngs[0])
    plan = [("good", index % len(pngs)) for index in range(good)] + [("bad", index % len(bad)) for index in range(hostile)]
    random.Random(0).shuffle(plan)
    counts = {"good": 0, "wrong": 0, "last_digit": 0, "lost": 0, "bad": 0, "5xx": 0, "bad_statuses": {}}
    memory, started, queue = {}, time.perf_counter(), iter(enumerate(plan))

    async def client() -> None:
        connection = Connection(port)
        for number, (kind, which) in queue:
            if time.perf_counter() - started > cap:
                break
            if number == len(plan) // 10:
                memory["after_first_tenth_kib"] = resident_kib(pid)
            raw = request("/models/image/predict", pngs[which], "image/png") if kind == "good" else bad[which]
            status, body = await connection.ask(raw)
            counts["5xx"] += status >= 500
            if kind == "good":
                counts["good"] += 1
                counts["lost"] += status != 200
                if status == 200 and body != expected[which]:
                    counts["last_digit" if same_answer(body, expected[which]) else "wrong"] += 1
            else:
                counts["bad"] += 1
                counts["bad_statuses"][status] = counts["bad_statuses"].get(status, 0) + 1
        connection.close()

    await asyncio.gather(*(client() for _ in range(32)))
    memory["at_end_kib"] = resident_kib(pid)
    wall = time.perf_counter() - started
    growth = memory["at_end_kib"] / memory.get("after_first_tenth_kib", memory["at_end_kib"]) - 1
    return {**counts, "wall_s": round(wall, 1), **memory, "memory_growth": f"{100 * growth:+.1f}%"}


def predict_files_per_s(bundle: Path, files: list[Path], work: Path) -> dict:
    """`cnncli predict --lines` on the same files: rate with start-up, and steady after the first row."""
    listing = work / "serve-64.txt"
    listing.write_text("".join(f"{path}\n" for path in files))
    command = [sys.executable, "-m", "cnncli", "predict", str(bundle), "--lines", str(listing), "--format", "csv"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=cnncli_environment())
    process.stdout.readline()  # the header
    process.stdout.readline()
    first = time.perf_counter()
    rows = 1 + sum(1 for _ in process.stdout)
    process.wait()
    ended = time.perf_counter()
    return {"files": rows, "per_s_with_startup": round(rows / (ended - started), 1),
            "per_s_steady": round((rows - 1) / (ended - first), 1)}


async def run(arguments, port: int, pid: int, pngs: list[Path], text: list[str], bundle: Path) -> dict:
    data = [path.read_bytes() for path in pngs]
    single = [request("/models/image/predict", data[index % len(data)], "image/png") for index in range(arguments.requests)]
    results = {"single_image_32_clients": await closed_loop(port, single, 32, arguments.time_cap)}
    count = min(arguments.requests, int(200 * arguments.time_cap))
    results["single_image_at_200_per_s"] = await fixed_rate(port, single[0], 200.0, count)
    batches = max(1, arguments.requests // 64)
    big = [request("/models/image/predict", multipart([(f"{k}.png", data[(64 * index + k) % len(data)]) for k in range(64)]),
                   f"multipart/form-data; boundary={BOUNDARY}") for index in range(batches)]
    served = await closed_loop(port, big, 4, arguments.time_cap)
    served["files_per_s"] = round(64 * served["per_s"], 1)
    results["64_images_per_request_4_clients"] = served
    used = [pngs[index % len(pngs)] for index in range(64 * served["requests"])]
    results["cnncli_predict_same_files"] = predict_files_per_s(bundle, used, arguments.work)
    sentence_requests = [request("/models/text/predict", json.dumps({"inputs": [text[index % len(text)]]}).encode(),
                                 "application/json") for index in range(arguments.requests)]
    results["one_sentence_32_clients"] = await closed_loop(port, sentence_requests, 32, arguments.time_cap)
    results["hostile_mix"] = await hostile_mix(port, pid, data[:50], arguments.good, arguments.hostile,
                                               arguments.time_cap * 5)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-serve")
    parser.add_argument("--requests", type=int, default=20_000, help="requests in phases 1, 2 (at most) and 4; "
                                                                     "/64 in phase 3")
    parser.add_argument("--good", type=int, default=100_000)
    parser.add_argument("--hostile", type=int, default=10_000)
    parser.add_argument("--time-cap", type=float, default=120.0, help="seconds a phase may take (the mix: 5x)")
    arguments = parser.parse_args()
    pngs = write_pngs(arguments.work / "png", 2_000)
    image, text = train_bundle("image", arguments.work / "bundles" / "image"), \
        train_bundle("text", arguments.work / "bundles" / "text")
    server = subprocess.Popen([sys.executable, "-m", "cnncli", "serve", str(image), str(text), "--port", "0"],
                              stdout=subprocess.PIPE, text=True, env=cnncli_environment())
    try:
        found = re.search(r":(\d+)/", server.stdout.readline())
        if not found:
            raise SystemExit("the server did not start (its error is above)")
        port = int(found.group(1))
        results = asyncio.run(run(arguments, port, server.pid, pngs, sentences(), image))
    finally:
        server.terminate()
        results_status = server.wait(timeout=120)
    results["server_exit_status_after_sigterm"] = results_status
    results["machine"] = f"{os.cpu_count()} CPUs, client and server on it"
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
