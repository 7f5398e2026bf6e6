"""Server CPU per request, for judging a change to `cnncli serve` on a noisy machine.

The request rate of bench/serve.py moves 10-15% from one run to the next on a shared VM, more
than most single changes are worth. The CPU time the server's processes spend per request moves
less: run this for the code before and after a change, alternating, several times each, and
compare the medians. One-sentence JSON requests from 32 clients (bench/serve.py's client) to a
server of one process and one thread by default; --spy FILE also records a py-spy profile of
the worker (py-spy installed) in its raw format.

    python bench/serve_cpu.py --requests 8000          # this checkout
    CODE=/path/to/other/checkout python bench/serve_cpu.py --bundle runs/bench-serve/bundles/text
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(os.environ.get("CODE", Path(__file__).resolve().parent.parent)) / "bench"))

from predict import REPO, cnncli_environment, sentences, train_bundle  # noqa: E402  (bench/predict.py)
from serve import closed_loop, request  # noqa: E402  (bench/serve.py)


def cpu_seconds(pid: int) -> tuple[float, list[int]]:
    """User and system CPU seconds of `pid` and its children (the worker processes), and their pids."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [pid] + ([int(child) for child in children.read_text().split()] if children.exists() else [])
    ticks = 0
    for each in pids:
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK"), pids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--workers", default="1")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--bundle", type=Path, help="a text bundle [default: bench/serve.py's]")
    parser.add_argument("--spy", type=Path, help="also write a py-spy profile of the worker here")
    args = parser.parse_args()
    bundle = args.bundle or train_bundle("text", REPO / "runs" / "bench-serve" / "bundles" / "text")
    server = subprocess.Popen([sys.executable, "-m", "cnncli", "serve", str(bundle), "--port", "0", "--workers",
                               args.workers, "--threads", args.threads], stdout=subprocess.PIPE, text=True,
                              env=cnncli_environment())
    try:
        found = re.search(r":(\d+)/", server.stdout.readline())
        if not found:
            raise SystemExit("the server did not start (its error is above)")
        port, text = int(found.group(1)), sentences()
        raws = [request("/predict", json.dumps({"inputs": [text[index % len(text)]]}).encode(), "application/json")
                for index in range(args.requests)]
        asyncio.run(closed_loop(port, raws[:500], 32, 60))  # warm up
        before, pids = cpu_seconds(server.pid)
        spy = None
        if args.spy:
            spy = subprocess.Popen(["py-spy", "record", "-r", "250", "-f", "raw", "-o", str(args.spy), "--pid",
                                    str(pids[-1])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        client_before = time.process_time()
        result = asyncio.run(closed_loop(port, raws, 32, 120))
        after, _ = cpu_seconds(server.pid)
        client = time.process_time() - client_before
        if spy is not None:
            spy.send_signal(2)
            spy.wait()
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(json.dumps({"server_cpu_us_per_request": round(1e6 * (after - before) / args.requests),
                      "client_cpu_us_per_request": round(1e6 * client / args.requests),
                      **{key: value for key, value in result.items() if not isinstance(value, list)}}))


if __name__ == "__main__":
    main()
