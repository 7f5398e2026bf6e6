"""A residual network on CIFAR-10 photos: cnncli's training speed against a plain PyTorch loop.

The same network (a 3 x 3 stem, residual blocks of 16, 32 and 64 channels, the last two at
stride 2, a global average pool; bench/reference/residual.py), the same 5,000 photos (the first
500 JPEGs of each class folder), batch size, epochs, Adam at a constant rate, no augmentation
and one torch thread on both sides. cnncli runs as a user runs it (`cnncli train RECIPE`, a fresh
process, training samples/s from its log); the reference as `python bench/reference/residual.py`.
The two alternate, --runs times each, so that the load of a shared machine falls on both; the
median of each side and their ratio are printed (the goal: cnncli >= 0.95x the reference).

    python bench/residual_speed.py [--root /work/data/train] [--per-class 500] [--epochs 1]
        [--batch 64] [--runs 3] [--threads 1] [--json runs/residual_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "bench" / "reference" / "residual.py"
BLOCKS = [{"conv": {"channels": 16, "kernel": 3, "padding": "same", "batch_norm": True}},
          {"residual": {"channels": 16}},
          {"residual": {"channels": 32, "stride": 2}},
          {"residual": {"channels": 64, "stride": 2}},
          {"pool": {"type": "avg", "size": "global"}}]


def subset(root: Path, per_class: int, folder: Path) -> Path:
    """A folder per class holding links to the first `per_class` JPEGs of each (the reference's photos)."""
    for source in sorted(path for path in root.iterdir() if path.is_dir()):
        target = folder / source.name
        target.mkdir(parents=True)
        for path in sorted(source.glob("*.jpg"))[:per_class]:
            (target / path.name).symlink_to(path)
    return folder


def recipe(data: Path, args: argparse.Namespace, folder: Path) -> Path:
    path = folder / "residual.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"root": str(data), "image": {"size": [32, 32], "color": "rgb"},
                 "split": {"test_fraction": 0.0, "val_fraction": 0.0, "seed": 0}},
        "model": {"blocks": BLOCKS},
        "train": {"epochs": args.epochs, "batch_size": args.batch, "optimizer": "adam", "lr": 0.003,
                  "schedule": "constant", "keep": "last", "calibrate": False, "threads": args.threads}}))
    return path


def run_cnncli(recipe_path: Path, out: Path, env: dict) -> float:
    finished = subprocess.run([sys.executable, "-m", "cnncli", "train", str(recipe_path), "--out", str(out),
                               "--format", "json"], env=env, capture_output=True, text=True, check=False)
    if finished.returncode:
        sys.exit(f"cnncli train failed:\n{finished.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # epochs of the same size: all the images over all the training seconds
    return statistics.harmonic_mean(record["samples_per_second"] for record in records)


def run_reference(args: argparse.Namespace, env: dict) -> float:
    printed = subprocess.run([sys.executable, str(REFERENCE), "--root", str(args.root), "--per-class",
                              str(args.per_class), "--epochs", str(args.epochs), "--batch", str(args.batch),
                              "--threads", str(args.threads)], check=True, env=env, capture_output=True, text=True)
    return json.loads(printed.stdout.strip().splitlines()[-1])["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/work/data/train"), help="a folder per class of JPEGs")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    # the same OpenMP settings for both sides (cnncli would otherwise pick a wait policy by the load)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory(prefix="residual-speed-") as scratch:
        folder = Path(scratch)
        recipe_path = recipe(subset(args.root, args.per_class, folder / "data"), args, folder)
        ours, theirs = [], []
        for run in range(args.runs):
            ours.append(run_cnncli(recipe_path, folder / f"run{run}", env))
            theirs.append(run_reference(args, env))
            print(f"run {run + 1}: cnncli {ours[-1]:,.0f} images/s, reference {theirs[-1]:,.0f} images/s, "
                  f"ratio {ours[-1] / theirs[-1]:.3f}", flush=True)
    ratios = [mine / plain for mine, plain in zip(ours, theirs)]
    summary = {"cnncli": statistics.median(ours), "reference": statistics.median(theirs),
               "ratio_of_medians": statistics.median(ours) / statistics.median(theirs),
               "median_ratio": statistics.median(ratios), "runs": {"cnncli": ours, "reference": theirs},
               "images": args.per_class * 10, "epochs": args.epochs, "batch": args.batch, "threads": args.threads}
    print(f"median: cnncli {summary['cnncli']:,.0f} images/s, reference {summary['reference']:,.0f} images/s, "
          f"ratio {summary['ratio_of_medians']:.3f} (median of the paired ratios {summary['median_ratio']:.3f})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
