"""How many torch threads, and which OpenMP wait policy, hold up when the machine is shared.

Trains the lecture-3 network (cnncli's own training step, random 28 x 28 images) for a fixed
number of steps in a fresh process per setting, while the machine is quiet, while one other
process keeps a core busy, and while another 2-thread torch job trains beside it. Settings:
1 and 2 torch threads (or --threads), each with the GNU OpenMP runtime's default wait policy
(idle threads spin for a while before they sleep), with OMP_WAIT_POLICY=PASSIVE (they sleep at
once; cnncli's entry point sets this unless the user set a policy) and with GOMP_SPINCOUNT=10000
(a short spin, then sleep). Prints samples/s per setting and load; the figures go in
docs/BENCHMARKS.md.

    python bench/threads.py [--steps 100] [--threads 1,2] [--loads quiet,spinner,torch]

Run it on an otherwise idle machine: its own competitors are the only load it should see.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The GNU OpenMP runtime's knobs (read once, when torch loads it): its default lets idle threads spin
# for a while before they sleep; PASSIVE makes them sleep at once; GOMP_SPINCOUNT shortens the spin.
POLICIES = {"default": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin 10k": {"GOMP_SPINCOUNT": "10000"}}
KNOBS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
SPINNER = "while True: pass"


def train_steps(steps: int, threads: int) -> float:
    """Samples/s of `steps` training steps of lecture-3 (batches of 100) with `threads` threads."""
    import torch

    from cnncli.modalities.image import ImageModality
    from cnncli.nn.model import network_for
    from cnncli.recipe.config import load_config
    from cnncli.training.engine import training_step
    from cnncli.training.optim import build_optimizer

    torch.set_num_threads(threads)
    config = load_config(REPO / "recipes" / "lecture-3.yaml")
    modality = ImageModality.from_config(config)
    torch.manual_seed(0)
    network = network_for(modality, config.model.blocks, 10)
    optimizer = build_optimizer(network.parameters(), config.train)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, 10, (100,), generator=generator)
    network.train()
    for step in range(steps + 10):
        if step == 10:  # the first steps warm up the allocator and the kernels
            started = time.perf_counter()
        training_step(network, modality, inputs, targets, optimizer, config.train, generator)
    return 100 * steps / (time.perf_counter() - started)


def competitor(load: str) -> subprocess.Popen | None:
    """The other process sharing the machine during a measurement."""
    if load == "quiet":
        return None
    if load == "spinner":
        command = [sys.executable, "-c", SPINNER]
    else:  # another torch job with 2 threads, under the default wait policy
        command = [sys.executable, __file__, "--worker", "--threads", "2", "--steps", "100000"]
    return subprocess.Popen(command, env=plain_environment(), stdout=subprocess.DEVNULL)


def plain_environment() -> dict:
    """This environment without the OpenMP knobs, with the repository on the path."""
    kept = {key: value for key, value in os.environ.items() if key not in KNOBS}
    return {**kept, "PYTHONPATH": str(REPO)}


def measure(threads: int, policy: dict, steps: int) -> float:
    output = subprocess.run([sys.executable, __file__, "--worker", "--threads", str(threads), "--steps", str(steps)],
                            env={**plain_environment(), **policy}, capture_output=True, text=True, check=True)
    return float(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--loads", default="quiet,spinner,torch")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        print(round(train_steps(arguments.steps, int(arguments.threads)), 1), flush=True)
        return
    results = []
    print(f"{'load':<8} {'threads':>7} {'policy':>8} {'samples/s':>10}")
    for load in arguments.loads.split(","):
        other = competitor(load)
        time.sleep(2 if other else 0)  # let the competitor start its work
        try:
            for threads in map(int, arguments.threads.split(",")):
                for name, policy in POLICIES.items():
                    rate = measure(threads, policy, arguments.steps)
                    results.append({"load": load, "threads": threads, "policy": name, "samples_per_second": rate})
                    print(f"{load:<8} {threads:>7} {name:>8} {rate:>10.0f}", flush=True)
        finally:
            if other:
                other.kill()
                other.wait()
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
