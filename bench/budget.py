"""`cnncli train --budget`: does the run end on time, and how far does it get?

Runs `cnncli train DATA --budget B` for each budget given, as a user runs it (a fresh process,
the wall clock taken around it), and prints for each: the wall-clock time against the budget, the
validation and test accuracy, the epochs run, the network and the augmentation chosen. With
--cifar-subset it first builds the CIFAR-10 subset of docs/BENCHMARKS.md ("Photos in one
command"): links to photos `first` to `first + train + val - 1` (in name order) of each class
folder, laid out as train/ and val/ split folders (test is then held out of train/).

    python bench/budget.py /tmp/c5k --cifar-subset /work/data/train --budget 2m --budget 5m
    python bench/budget.py /work/data/train --budget 10m --json runs/budget.json
    python bench/budget.py recipes/image.yaml --set data.root=DIR --budget 3m
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cnncli.runtime.durations import parse_duration  # noqa: E402


def cifar_subset(source: Path, target: Path, first: int, train: int, val: int) -> None:
    """target/{train,val}/<class>/ holding links to photos of each of source's class folders."""
    for folder in sorted(path for path in source.iterdir() if path.is_dir()):
        photos = sorted(folder.iterdir())[first:first + train + val]
        for part, chosen in (("train", photos[:train]), ("val", photos[train:])):
            (target / part / folder.name).mkdir(parents=True, exist_ok=True)
            for photo in chosen:
                link = target / part / folder.name / photo.name
                if not link.exists():
                    link.symlink_to(photo)


def run(data: str, budget: str, sets: list[str]) -> dict:
    """One `cnncli train` under `budget`: its wall clock, summary and bundle record."""
    out = Path(tempfile.mkdtemp(prefix="budget-")) / "run"
    command = [sys.executable, "-m", "cnncli", "train", data, "--budget", budget, "--out", str(out),
               "--format", "json", *[item for value in sets for item in ("--set", value)]]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.monotonic() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    info = json.loads((out / "model.json").read_text())
    training = info["training"]
    network = next((line for line in done.stderr.splitlines() if line.startswith("model.blocks auto")), "")
    metrics = info["metrics"]
    return {"budget": budget, "wall_seconds": round(wall, 1), "share": round(wall / parse_duration(budget), 3),
            "val": metrics.get("val", {}).get("accuracy"), "test": metrics.get("test", {}).get("accuracy"),
            "epochs": training.get("epochs_run"), "augment": (training.get("auto") or {}).get("chosen"),
            "network": network, "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="a folder of photos, or a recipe")
    parser.add_argument("--budget", action="append", required=True)
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--cifar-subset", type=Path, help="build DATA first from this CIFAR-10 train folder")
    parser.add_argument("--first", type=int, default=1000)
    parser.add_argument("--train", type=int, default=450)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.cifar_subset:
        cifar_subset(args.cifar_subset, Path(args.data), args.first, args.train, args.val)
    rows = []
    for budget in args.budget:
        rows.append(run(args.data, budget, args.sets))
        row = rows[-1]
        print(f"{row['budget']:>6}  wall {row['wall_seconds']:7.1f} s ({row['share']:.1%} of it)  val {row['val']}  "
              f"test {row['test']}  epochs {row['epochs']}  augment {row['augment']}  load {row['load']:.1f}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
