"""Threads or processes for decoding? Encode the same inputs one chunk at a time in this process,
with a pool of threads and with a pool of forked processes, and print files/s for each.

This is how `cnncli predict` chose worker processes: PIL's PNG decoding, soundfile + the
log-mel features, and text tokenisation each spend most of their time in Python code holding
the GIL on small inputs, so threads add little, while processes use every core.

    python bench/decode_parallel.py [--workers 2] [--count 4000] [--modality image,audio,text]

It needs the bundles and inputs that bench/predict.py prepares (run that once, or
`python bench/predict.py --prepare-only`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from itertools import islice
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

CHUNK = 256
_MODALITY = None  # the modality a forked worker encodes with (inherited, not pickled)


def encode_chunk(samples) -> int:
    return len(_MODALITY.encode_many(samples).index)


def one_thread_per_worker() -> None:
    import torch

    torch.set_num_threads(1)


def chunks(samples: list, size: int = CHUNK) -> list[list]:
    items = iter(samples)
    return list(iter(lambda: list(islice(items, size)), []))


def timed(label: str, run, count: int) -> None:
    started = time.perf_counter()
    encoded = run()
    seconds = time.perf_counter() - started
    print(f"  {label:<22} {count / seconds:8.0f} inputs/s  ({seconds:.2f} s, {encoded} encoded)")


def compare(name: str, modality, samples: list, workers: int) -> None:
    global _MODALITY
    _MODALITY = modality
    parts = chunks(samples)
    encode_chunk(parts[0][:8])  # first-call costs (filter banks, regex compilation) are not the point
    print(f"{name}: {len(samples)} inputs in chunks of {CHUNK}")
    timed("one thread", lambda: sum(encode_chunk(part) for part in parts), len(samples))
    with ThreadPoolExecutor(workers) as pool:
        timed(f"{workers} threads", lambda: sum(pool.map(encode_chunk, parts)), len(samples))
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=one_thread_per_worker) as pool:
        pool.submit(one_thread_per_worker).result()  # the pool is started before the clock runs
        timed(f"{workers} processes (fork)", lambda: sum(pool.map(encode_chunk, parts)), len(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--modality", default="image,audio,text")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-predict")
    arguments = parser.parse_args()

    import torch

    from cnncli.bundle.io import load_bundle
    from cnncli.data.sample import Sample

    torch.set_num_threads(1)
    for name in arguments.modality.split(","):
        bundle = load_bundle(arguments.work / "bundles" / name)
        listing = arguments.work / "inputs" / f"{name}-10000.txt"
        lines = listing.read_text(encoding="utf-8").splitlines()[:arguments.count]
        samples = [Sample(line, content=line) if name == "text" else Sample(line) for line in lines]
        compare(name, bundle.modality, samples, arguments.workers)


if __name__ == "__main__":
    main()
