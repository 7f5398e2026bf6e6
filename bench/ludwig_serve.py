"""Ludwig's `ludwig serve` beside `cnncli serve`, on the same task and the same client (issue 29).

    python bench/ludwig_serve.py --ludwig /path/to/venv-with-ludwig [--requests 2000] [--time-cap 60]

Ludwig lives in a virtual environment of its own (`pip install ludwig`: its dependencies clash
with cnncli's). The script writes the MNIST digits bench/serve.py uses as PNGs with a CSV of
labels, trains a Ludwig model on them (an image feature with its default encoder, one epoch:
quality does not change the speed), starts `ludwig serve` on a free loopback port and sends it
single-image requests from 32 concurrent clients (multipart, the image as the file of the form
field named after the feature, as Ludwig's server reads it), then the same number to
`cnncli serve` on bench/serve.py's lecture-3 bundle of the same digits. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict import REPO, SHARED, cnncli_environment, train_bundle, write_pngs  # noqa: E402  (bench/predict.py)
from serve import closed_loop, request  # noqa: E402  (bench/serve.py)

BOUNDARY = "ludwig-bench-3c9a"
CONFIG = """input_features:
  - {name: image_path, type: image}
output_features:
  - {name: label, type: category}
trainer: {epochs: 1, batch_size: 128}
"""


def labels(count: int) -> list[int]:
    with gzip.open(SHARED / "mnist-t10k" / "t10k-labels-idx1-ubyte.gz") as stream:
        return list(stream.read()[8:8 + count])


def ludwig_model(ludwig: Path, work: Path, pngs: list[Path]) -> Path:
    """A Ludwig model trained on the PNGs (once)."""
    model = work / "ludwig" / "run" / "model"
    if (model / "model_hyperparameters.json").exists():
        return model
    (work / "ludwig").mkdir(parents=True, exist_ok=True)
    dataset = work / "ludwig" / "digits.csv"
    dataset.write_text("image_path,label\n" + "".join(f"{path},{label}\n" for path, label in
                                                       zip(pngs, labels(len(pngs)))))
    config = work / "ludwig" / "config.yaml"
    config.write_text(CONFIG)
    subprocess.run([str(ludwig / "bin" / "ludwig"), "train", "--dataset", str(dataset), "--config", str(config),
                    "--output_directory", str(work / "ludwig"), "--experiment_name", "digits", "--model_name", "run",
                    "--skip_save_processed_input"], check=True, stdout=subprocess.DEVNULL)
    found = sorted((work / "ludwig").glob("digits_run*/model"))
    if not found:
        raise SystemExit("Ludwig trained, but wrote no model folder")
    found[-1].parent.rename(model.parent)
    return model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}) before it listened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server did not listen in time")


def ludwig_request(png: bytes) -> bytes:
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image_path"; filename="digit.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{BOUNDARY}--\r\n".encode()
    return request("/predict", body, f"multipart/form-data; boundary={BOUNDARY}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ludwig", type=Path, required=True, help="a virtual environment with ludwig installed")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-serve")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--time-cap", type=float, default=60.0)
    arguments = parser.parse_args()
    pngs = write_pngs(arguments.work / "png", 2_000)
    data = [path.read_bytes() for path in pngs]
    results = {}
    model = ludwig_model(arguments.ludwig, arguments.work, pngs)
    port = free_port()
    server = subprocess.Popen([str(arguments.ludwig / "bin" / "ludwig"), "serve", "--model_path", str(model),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, server)
        raws = [ludwig_request(data[index % len(data)]) for index in range(arguments.requests)]
        asyncio.run(closed_loop(port, raws[:50], 4, 30))  # warm
        results["ludwig_serve_single_image_32_clients"] = asyncio.run(
            closed_loop(port, raws, 32, arguments.time_cap))
    finally:
        server.terminate()
        server.wait(timeout=60)
    image = train_bundle("image", arguments.work / "bundles" / "image")
    server = subprocess.Popen([sys.executable, "-m", "cnncli", "serve", str(image), "--port", "0"],
                              stdout=subprocess.PIPE, text=True, env=cnncli_environment())
    try:
        port = int(re.search(r":(\d+)/", server.stdout.readline()).group(1))
        raws = [request("/predict", data[index % len(data)], "image/png") for index in range(arguments.requests)]
        asyncio.run(closed_loop(port, raws[:50], 4, 30))
        results["cnncli_serve_single_image_32_clients"] = asyncio.run(closed_loop(port, raws, 32, arguments.time_cap))
    finally:
        server.terminate()
        server.wait(timeout=60)
    ludwig_rate = results["ludwig_serve_single_image_32_clients"]["per_s"]
    results["cnncli_over_ludwig"] = round(results["cnncli_serve_single_image_32_clients"]["per_s"]
                                          / max(ludwig_rate, 1e-9), 1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
