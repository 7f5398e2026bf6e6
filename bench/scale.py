"""Data bigger than memory: training on a folder of image files held in memory and streamed.

Writes Fashion-MNIST's training images, upscaled to 96 x 96 RGB JPEGs, into a folder of class
folders (once; 60,000 files by default), then:

1. decodes the folder up front with 1 and with 2 DataLoader worker processes (cnncli's
   encode_split) and times both;
2. trains on it with `cnncli train` (a small three-layer CNN, a fixed number of steps) with the
   data held in memory and streamed from the files (data.in_memory=true / false), and records the
   training samples/s (from the bundle's log), the peak RSS of the training process (wait4's
   ru_maxrss: the largest of it and its workers) and the peak PSS of the whole process tree
   (sampled every 0.1 s; shared pages counted once).

Then checks the issue's targets: in-memory peak RSS <= 1.3 x the encoded pixels + 1 GB,
streaming peak RSS < 2 GB, streaming samples/s >= 0.8 x in memory, decoding with 2 workers
>= 1.7x as fast as with 1. Needs `apt-get install -y dataset-fashion-mnist`.

    python bench/scale.py [--files 60000] [--folder /tmp/cnncli-scale] [--steps 300] [--threads 2] [--repeats 3]

Each timing is taken `--repeats` times, the kinds alternated, and the medians are compared (the
peak memory is the largest of the runs): on a shared VM one run can be 15% off the next. Timings
need a quiet machine; `--files 2000 --steps 20 --repeats 1` checks that everything runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")
SIZE = 96
RECIPE = """\
data:
  modality: image
  root: {folder}
  image: {{size: [{size}, {size}], color: rgb, resize: stretch}}
  split: {{test_fraction: 0.02, val_fraction: 0.0}}
model:
  blocks:
    - conv: {{channels: 16, kernel: 3, stride: 2, padding: same, batch_norm: true}}
    - conv: {{channels: 32, kernel: 3, stride: 2, padding: same, batch_norm: true}}
    - conv: {{channels: 64, kernel: 3, stride: 2, padding: same, batch_norm: true}}
    - pool: {{type: avg, size: global}}
train: {{steps: {steps}, batch_size: 64, lr: 0.003, keep: last, threads: {threads}}}
augment: {{shift: 0.05, hflip: true}}
"""


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    dimensions = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dimensions)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)


def _write_images(job: tuple[Path, int, np.ndarray, np.ndarray]) -> None:
    from PIL import Image

    folder, start, images, labels = job
    for offset, (pixels, label) in enumerate(zip(images, labels)):
        path = folder / str(label) / f"{start + offset:05d}.jpg"
        if not path.exists():
            Image.fromarray(pixels).resize((SIZE, SIZE), Image.BILINEAR).convert("RGB").save(path, quality=90)


def write_folder(folder: Path, count: int) -> None:
    """Fashion-MNIST's first `count` training images as 96 x 96 RGB JPEGs in class folders."""
    images = read_idx(FASHION / "train-images-idx3-ubyte.gz")[:count]
    labels = read_idx(FASHION / "train-labels-idx1-ubyte.gz")[:count]
    if len(images) < count:
        raise SystemExit(f"Fashion-MNIST has only {len(images)} training images")
    for label in range(10):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
    jobs = [(folder, start, images[start:start + 1000], labels[start:start + 1000]) for start in range(0, count, 1000)]
    with ProcessPoolExecutor(max(1, len(os.sched_getaffinity(0)))) as pool:
        list(pool.map(_write_images, jobs))


def read_once(folder: Path) -> None:
    """Read every file once, so that neither timed decode pays for a cold disk cache."""
    for path in folder.rglob("*.jpg"):
        path.read_bytes()


def decode_seconds(recipe: Path, workers: int) -> float:
    """Seconds cnncli takes to decode the recipe's whole folder into memory with `workers`
    processes (in a fresh process, so that nothing is warm)."""
    output = subprocess.run([sys.executable, __file__, "--decode", str(workers), "--recipe", str(recipe)],
                            env=environment(), capture_output=True, text=True)
    if output.returncode != 0:
        raise SystemExit(f"decoding with {workers} workers failed:\n{output.stderr[-3000:]}")
    return float(output.stdout.strip().splitlines()[-1])


def decode(recipe: Path, workers: int) -> float:
    from cnncli.data.sources import read_sources
    from cnncli.modalities.image import ImageModality
    from cnncli.recipe.config import load_config
    from cnncli.training.encoding import encode_split

    config = load_config(recipe)
    modality = ImageModality.from_config(config)
    samples = read_sources(config.data.train, config.data, modality)
    labels = sorted({sample.label for sample in samples})
    started = time.perf_counter()
    encode_split(modality, samples, labels, "all", workers=workers)
    return time.perf_counter() - started


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def tree_pss(pid: int) -> int:
    """Proportional set size of `pid` and its descendants, in bytes (shared pages split)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def train_run(recipe: Path, out: Path, in_memory: bool, workers: str | None) -> dict:
    """`cnncli train` with the data in memory or streamed: samples/s, peak RSS, peak tree PSS."""
    command = [sys.executable, "-m", "cnncli", "train", str(recipe), "--out", str(out), "--overwrite", "--format",
               "json", "--set", f"data.in_memory={str(in_memory).lower()}"]  # a rerun replaces the last run's bundle
    if workers is not None:
        command += ["--set", f"data.workers={workers}"]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, env=environment(), stdout=stdout, stderr=stderr, text=True)
        peak_pss = 0
        while True:  # wait4 gives this child's own peak RSS (the largest of it and its workers)
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak_pss = max(peak_pss, tree_pss(process.pid))
            time.sleep(0.1)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"cnncli train failed:\n{stderr.read()[-3000:]}")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    info = json.loads((out / "model.json").read_text())["training"]
    return {"samples_per_second": log[-1]["samples_per_second"], "peak_rss": usage.ru_maxrss * 1024,
            "peak_pss": peak_pss, "encode_seconds": info["encode_seconds"], "workers": info["workers"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=60000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/cnncli-scale"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=3, help="timings of each kind, alternated; medians reported")
    parser.add_argument("--workers", help="data.workers for both training runs [default: cnncli's choice]")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--decode", type=int, help=argparse.SUPPRESS)  # one timing, in a fresh process
    parser.add_argument("--recipe", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.decode is not None:
        print(decode(arguments.recipe, arguments.decode))
        return
    images = arguments.folder / f"images-{arguments.files}"
    started = time.perf_counter()
    write_folder(images, arguments.files)
    print(f"folder: {arguments.files} JPEGs of {SIZE} x {SIZE} in {images} ({time.perf_counter() - started:.0f} s)")
    recipe = images.parent / "scale.yaml"
    recipe.write_text(RECIPE.format(folder=images, size=SIZE, steps=arguments.steps, threads=arguments.threads))
    encoded = arguments.files * 3 * SIZE * SIZE
    figures = {"files": arguments.files, "encoded_bytes": encoded, "threads": arguments.threads}
    read_once(images)
    decodes: dict[int, list[float]] = {1: [], 2: []}
    runs: dict[str, list[dict]] = {"in_memory": [], "streaming": []}
    for repeat in range(arguments.repeats):  # alternated, so that a slow minute does not land on one side
        for workers in (1, 2):
            decodes[workers].append(round(decode_seconds(recipe, workers), 2))
        for name, in_memory in (("in_memory", True), ("streaming", False)):
            run = train_run(recipe, arguments.folder / f"run-{name}", in_memory, arguments.workers)
            runs[name].append(run)
            print(f"  run {repeat + 1}: {name:<10} {run['samples_per_second']:>5.0f} samples/s  "
                  f"peak RSS {run['peak_rss'] / 1e9:.2f} GB")
    figures["decode_seconds"] = {workers: statistics.median(seconds) for workers, seconds in decodes.items()}
    figures["decode_seconds_each"] = decodes
    speedup = figures["decode_seconds"][1] / figures["decode_seconds"][2]
    print(f"decoding up front (median of {arguments.repeats}): {figures['decode_seconds'][1]:.1f} s with 1 worker, "
          f"{figures['decode_seconds'][2]:.1f} s with 2 ({speedup:.2f}x)")
    for name, each in runs.items():
        run = {"samples_per_second": statistics.median(r["samples_per_second"] for r in each),
               "peak_rss": max(r["peak_rss"] for r in each), "peak_pss": max(r["peak_pss"] for r in each),
               "encode_seconds": statistics.median(r["encode_seconds"] for r in each),
               "workers": each[0]["workers"], "each": each}
        figures[name] = run
        print(f"{name:<10} {run['samples_per_second']:>7.0f} samples/s (median)  peak RSS {run['peak_rss'] / 1e9:.2f} GB"
              f"  peak PSS of the process tree {run['peak_pss'] / 1e9:.2f} GB  ({run['workers']} workers, "
              f"encode {run['encode_seconds']:.1f} s)")
    held, streamed = figures["in_memory"], figures["streaming"]
    checks = {
        "in-memory peak RSS <= 1.3 x encoded + 1 GB": held["peak_rss"] <= 1.3 * encoded + 1e9,
        "streaming peak RSS < 2 GB": streamed["peak_rss"] < 2e9,
        "streaming samples/s >= 0.8 x in memory": streamed["samples_per_second"] >= 0.8 * held["samples_per_second"],
        "decoding with 2 workers >= 1.7x as fast as with 1": speedup >= 1.7,
    }
    print(f"encoded pixels: {encoded / 1e9:.2f} GB; in-memory limit {(1.3 * encoded + 1e9) / 1e9:.2f} GB")
    for check, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")
    figures["checks"] = checks
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
