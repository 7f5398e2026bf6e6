"""Batch prediction at scale: `cnncli predict` on 10,000 and 100,000 inputs of each modality,
beside a naive loop that loads the bundle once and predicts one input at a time.

    python bench/predict.py                       # the full run (a few minutes on 2 cores)
    python bench/predict.py --sizes 500,2000      # a smoke run
    python bench/predict.py --prepare-only        # just the bundles and input lists

It prepares, under --work (default runs/bench-predict/, reused by later runs):
- 10,000 MNIST test images written as PNG files (from ../shared/data/mnist-t10k);
- three bundles, trained for a few steps (the weights' quality does not change the speed):
  images `recipes/lecture-3.yaml` on those digits, audio `recipes/fsdd.yaml` and text
  `recipes/sst2.yaml` each as one network; predict runs with `--no-cache`, so every recording is
  decoded and transformed;
- input lists: PNG paths, FSDD recording paths and SST-2 / MR sentences, repeated up to each size.

Then it runs `python -m cnncli predict BUNDLE - --format csv` (text: `--lines FILE`) as a separate
process per modality and size, reading its stdout through a pipe as a shell user would, and
prints per run: wall seconds and the time to the first row (both with start-up: Python, torch,
the bundle), inputs/s = inputs / wall (how the issue measured 2,360 files/s), steady/s = the rate
after the first tenth of the rows (start-up left out; from 2,000 inputs), the peak RSS of the
largest process (wait4) and the peak of the summed PSS of cnncli and its workers (sampled every
0.1 s; PSS counts the pages forked workers share once). The naive loop runs in its own process,
on 10,000 inputs (audio: the 2,500 recordings), and is measured the same way; so is a run on
five inputs, whose time to the first row is start-up alone (no worker is started for so few).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
GOALS = {"image": "goal >= 4,000/s and >= 3x naive", "audio": "goal >= 2,000/s",
         "text": "goal >= 10,000/s (one network)"}
NAIVE_COUNT = {"image": 10_000, "audio": 2_500, "text": 10_000}
HANDFUL = 5  # a run this small shows the time to the first row when no worker is started


# -- preparation -------------------------------------------------------------------------------


def write_pngs(folder: Path, count: int = 10_000) -> list[Path]:
    """The first `count` MNIST test digits as PNG files (written once)."""
    from PIL import Image

    sys.path.insert(0, str(REPO))
    from cnncli.data.sources import read_idx_array

    paths = [folder / f"{index:05d}.png" for index in range(count)]
    if all(path.exists() for path in paths[-10:]):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    images = read_idx_array(SHARED / "mnist-t10k" / "t10k-images-idx3-ubyte.gz")
    for index, path in enumerate(paths):
        Image.fromarray(images[index].numpy()).save(path)
    return paths


BUNDLES = {
    "image": ["recipes/lecture-3.yaml", f"data.root={SHARED / 'mnist-t10k'}", "data.train=t10k-images-idx3-ubyte.gz",
              "data.test=null"],
    "audio": ["recipes/fsdd.yaml", "train.ensemble=1"],
    "text": ["recipes/sst2.yaml", "train.ensemble=1", "train.rotate_val=false"],
}


def train_bundle(name: str, out: Path) -> Path:
    if (out / "model.json").exists():
        return out
    recipe, *overrides = BUNDLES[name]
    command = [sys.executable, "-m", "cnncli", "train", str(REPO / recipe), "--out", str(out), "--format", "json",
               "--set", "train.steps=30", "--no-cache"]
    for override in overrides:
        command += ["--set", override]
    subprocess.run(command, check=True, env=cnncli_environment(), stdout=subprocess.DEVNULL)
    return out


def sentences() -> list[str]:
    lines = []
    for path in sorted((SHARED / "sst2").glob("stsa.binary.*")):
        lines += [line.partition(" ")[2].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    for path in sorted((SHARED / "mr").glob("rt-polarity.*")):
        lines += path.read_text(encoding="latin-1").splitlines()
    return [line for line in (line.strip() for line in lines) if line]


def write_inputs(folder: Path, name: str, items: list[str], sizes: list[int]) -> dict[int, Path]:
    """One list file per size: `items` repeated (in order) up to that many lines."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for size in sizes:
        path = folder / f"{name}-{size}.txt"
        if not path.exists():
            repeated = (items * (size // len(items) + 1))[:size]
            path.write_text("".join(item + "\n" for item in repeated), encoding="utf-8")
        files[size] = path
    return files


def prepare(work: Path, sizes: list[int]) -> dict:
    items = {
        "image": [str(path) for path in write_pngs(work / "png")],
        "audio": [str(path) for path in sorted((SHARED / "fsdd" / "recordings").glob("*.wav"))],
        "text": sentences(),
    }
    prepared = {}
    for name in ("image", "audio", "text"):
        bundle = train_bundle(name, work / "bundles" / name)
        wanted = sorted(set(sizes) | {10_000, NAIVE_COUNT[name], HANDFUL})
        prepared[name] = {"bundle": bundle, "inputs": write_inputs(work / "inputs", name, items[name], wanted)}
    return prepared


def cnncli_environment() -> dict:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH")]))
    return environment


# -- measuring ------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    stack.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(command: list[str], stdin_path: Path | None) -> dict:
    """Run `command`, read its stdout line by line; times, row count and memory."""
    started = time.perf_counter()
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=cnncli_environment())
    peak = {"pss": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak["pss"] = max(peak["pss"], sum(pss_kib(pid) for pid in process_tree(process.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    errors = threading.Thread(target=lambda: setattr(process, "stderr_text", process.stderr.read()), daemon=True)
    errors.start()
    arrivals = []  # when each row arrived (the CSV header is not a row)
    for number, _ in enumerate(process.stdout):
        if number:
            arrivals.append(time.perf_counter())
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    ended = time.perf_counter()
    done.set()
    sampler.join()
    errors.join()
    if stdin_path:
        stdin.close()
    if process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {process.stderr_text.decode()[-2000:]}")
    rows = len(arrivals)
    settled = rows // 10  # the steady rate leaves out start-up and the first tenth of the rows
    steady = (rows - 1 - settled) / (arrivals[-1] - arrivals[settled]) if rows >= 2000 else float("nan")
    return {"rows": rows, "wall": ended - started, "first_row": (arrivals[0] if rows else ended) - started,
            "rate": rows / (ended - started), "steady": steady, "rss_mb": usage.ru_maxrss / 1024,
            "pss_mb": peak["pss"] / 1024}


def cnncli_run(name: str, bundle: Path, inputs: Path, workers: str | None) -> dict:
    command = [sys.executable, "-m", "cnncli", "predict", str(bundle), "--format", "csv", "--no-cache"]
    command += ["--lines", str(inputs)] if name == "text" else ["-"]
    if workers is not None:
        command += ["--workers", workers]
    return run_measured(command, None if name == "text" else inputs)


def naive_run(name: str, bundle: Path, inputs: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--naive", name, str(bundle), str(inputs)]
    return run_measured(command, None)


def naive_loop(name: str, bundle_path: str, inputs: str) -> None:
    """What a user would write first: load the bundle once, then one input at a time, one row each."""
    import torch

    from cnncli.bundle.io import load_bundle
    from cnncli.data.sample import Sample

    bundle = load_bundle(bundle_path)
    labels = bundle.labels
    print("input,label,score")
    with open(inputs, encoding="utf-8") as lines, torch.no_grad():
        for line in lines:
            item = line.rstrip("\n")
            sample = Sample(item, content=item) if name == "text" else Sample(item)
            probabilities = torch.softmax(bundle.network(bundle.modality.encode(sample).unsqueeze(0)), dim=1)[0]
            score, index = probabilities.max(0)
            print(f"{item if name != 'text' else 'sentence'},{labels[int(index)]},{float(score):.6f}", flush=True)


def versus(result: dict, naive: dict) -> str:
    """The ratios to the naive loop: of steady rates, and of inputs/s when both read as many."""
    ratios = []
    if math.isfinite(result["steady"] / naive["steady"]):
        ratios.append(f"{result['steady'] / naive['steady']:.1f}x the naive loop's steady/s")
    if naive["rows"] == result["rows"]:
        ratios.append(f"{result['rate'] / naive['rate']:.1f}x its inputs/s")
    return "".join("; " + ", ".join(ratios) for _ in ratios[:1])


def report(name: str, result: dict, note: str) -> None:
    print(f"{name:<6} {result['rows']:>7,} {result['wall']:7.2f} {result['first_row']:9.2f} {result['rate']:9,.0f}"
          f" {result['steady']:9,.0f} {result['rss_mb']:8.0f} {result['pss_mb']:8.0f}  {note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-predict")
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated input counts")
    parser.add_argument("--modality", default="image,audio,text")
    parser.add_argument("--workers", default=None, help="pass --workers to cnncli predict (default: its own)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--naive", nargs=3, metavar=("MODALITY", "BUNDLE", "INPUTS"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.naive:
        return naive_loop(*arguments.naive)

    sizes = [int(size) for size in arguments.sizes.split(",")]
    prepared = prepare(arguments.work, sizes)
    if arguments.prepare_only:
        return
    print(f"cpus {len(os.sched_getaffinity(0))}, python {sys.version.split()[0]}. Per run: wall seconds and time "
          f"to the first row (start-up included), inputs/s = inputs / wall, steady/s = after the first tenth of the "
          f"rows (from 2,000 inputs), peak RSS of the largest process and peak PSS of all, MB")
    print(f"{'kind':<6} {'inputs':>7} {'wall s':>7} {'1st row':>9} {'inputs/s':>9} {'steady/s':>9} {'RSS':>8} "
          f"{'PSS':>8}")
    for name in arguments.modality.split(","):
        bundle, inputs = prepared[name]["bundle"], prepared[name]["inputs"]
        naive = None
        if not arguments.no_naive:
            naive = naive_run(name, bundle, inputs[NAIVE_COUNT[name]])
            report(name, naive, "naive loop: bundle loaded once, one input at a time")
        report(name, cnncli_run(name, bundle, inputs[HANDFUL], arguments.workers),
               "cnncli predict, a handful of inputs (no worker started)")
        results = {}
        for size in sizes:
            results[size] = result = cnncli_run(name, bundle, inputs[size], arguments.workers)
            report(name, result, "cnncli predict" + (versus(result, naive) if naive else ""))
        if len(sizes) > 1:
            low, high = results[min(sizes)], results[max(sizes)]
            print(f"{name:<6} peak memory at {max(sizes):,} vs {min(sizes):,}: "
                  f"RSS {high['rss_mb'] / low['rss_mb'] - 1:+.1%}, PSS {high['pss_mb'] / low['pss_mb'] - 1:+.1%} "
                  f"(goal: within 10%); {GOALS[name]}", flush=True)


if __name__ == "__main__":
    main()
