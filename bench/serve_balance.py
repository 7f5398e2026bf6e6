"""Four keep-alive clients all on one of two `cnncli serve` processes: does the server even them out?

Each --workers process listens on a socket of its own, and the kernel hashes each connection to
one of them; a client that keeps a few connections for long can have them all on one process
(cnncli/serve/balance.py). This opens four connections to a two-process server until `ss` shows
all four held by one process, then sends 64-PNG requests on them for --seconds, printing each
second's files/s and how the connections are split between the processes.

    python bench/serve_balance.py
    CODE=/path/to/other/checkout python bench/serve_balance.py     # the other checkout's server
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(os.environ.get("CODE", Path(__file__).resolve().parent.parent)) / "bench"))

from predict import REPO, cnncli_environment, train_bundle, write_pngs  # noqa: E402  (bench/predict.py)
from serve import BOUNDARY, Connection, multipart, request  # noqa: E402  (bench/serve.py)


def split(port: int) -> list[int]:
    """Established connections to `port` per server process, fewest first (from `ss`)."""
    listing = subprocess.run(["ss", "-tnpH", "state", "established", f"sport = :{port}"], capture_output=True,
                             text=True).stdout
    pids = re.findall(r"pid=(\d+)", listing)
    return sorted(pids.count(pid) for pid in set(pids))


async def load(port: int, pngs: list[bytes], seconds: int, tries: int) -> None:
    one = request("/predict", pngs[0], "image/png")
    for attempt in range(1, tries + 1):
        connections = [Connection(port) for _ in range(4)]
        for connection in connections:
            await connection.ask(one)
        if split(port) == [4]:
            break
        for connection in connections:
            connection.close()
    else:
        raise SystemExit(f"no try of {tries} put all four connections on one process")
    print(f"all four connections on one process after {attempt} tries", flush=True)
    big = request("/predict", multipart([(f"{k}.png", data) for k, data in enumerate(pngs)]),
                  f"multipart/form-data; boundary={BOUNDARY}")
    files, started = [0], time.perf_counter()

    async def client(connection: Connection) -> None:
        while time.perf_counter() - started < seconds:
            status, _ = await connection.ask(big)
            files[0] += 64 if status == 200 else 0

    async def report() -> None:
        last = 0
        for second in range(1, seconds + 1):
            await asyncio.sleep(1)
            print(f"second {second}: {files[0] - last} files/s, connections per process {split(port)}", flush=True)
            last = files[0]

    await asyncio.gather(report(), *(client(connection) for connection in connections))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-serve")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--tries", type=int, default=100)
    arguments = parser.parse_args()
    pngs = [path.read_bytes() for path in write_pngs(arguments.work / "png", 2_000)[:64]]
    image = train_bundle("image", arguments.work / "bundles" / "image")
    server = subprocess.Popen([sys.executable, "-m", "cnncli", "serve", str(image), "--port", "0", "--workers", "2"],
                              stdout=subprocess.PIPE, text=True, env=cnncli_environment())
    try:
        found = re.search(r":(\d+)/", server.stdout.readline())
        if not found:
            raise SystemExit("the server did not start (its error is above)")
        asyncio.run(load(int(found.group(1)), pngs, arguments.seconds, arguments.tries))
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
