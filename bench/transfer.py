"""Transfer benchmark: does a backbone learned on some classes help with others, seen only a little?

The backbone issue's test, on CIFAR-10's training JPEGs (the test split is never used): pretrain
on eight classes, then fine-tune on the two held out with `--set model.init=PRETRAINED` on a few
images per class, and train the same recipe from scratch on the same images. Both are judged on
other images of those two classes that neither run saw (the held-out set), once each, on the
final model. The folders are symlink farms in a temporary folder; nothing is copied.

    python bench/transfer.py --cifar /work/data/train                 # cat and dog held out
    python bench/transfer.py --cifar DIR --held-out automobile truck --per-class 100
    python bench/transfer.py --cifar DIR --work W --reuse             # W/pretrained from an earlier run

The recipe is the general one (recipes/image.yaml) unless --recipe says otherwise: pretraining
adds --pretrain-set (by default the usual CIFAR augmentation, flips and 4-pixel shifts, fixed so
that no time goes to choosing it), fine-tuning adds model.init, --freeze-epochs and
--backbone-lr, and scratch is the recipe alone.

Prints one JSON line per run and a last summary line (fine-tuned, scratch, the gap in points).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def farm(target: Path, files: dict[str, list[Path]]) -> None:
    """target/<class>/ holding symlinks to each class's files (an earlier farm there is replaced)."""
    shutil.rmtree(target, ignore_errors=True)
    for name, paths in files.items():
        (target / name).mkdir(parents=True)
        for path in paths:
            (target / name / path.name).symlink_to(path.resolve())


def cnncli(*args: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cnncli", *args, "--format", "json"], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"cnncli {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar", type=Path, required=True, help="CIFAR-10 training JPEGs: class folders")
    parser.add_argument("--held-out", nargs=2, default=["cat", "dog"], help="the two classes kept from pretraining")
    parser.add_argument("--pretrain-per-class", type=int, default=5000, help="at most (5,000: all of them)")
    parser.add_argument("--per-class", type=int, default=100, help="fine-tuning images per held-out class")
    parser.add_argument("--judge-per-class", type=int, default=1000, help="held-out images per class to judge on")
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "image.yaml")
    parser.add_argument("--pretrain-set", action="append", metavar="KEY=VALUE",
                        help="an override for pretraining only (repeat it) [default: augment={translate: 0.125, "
                             "hflip: true}]")
    parser.add_argument("--backbone-lr", type=float, default=0.1, help="train.backbone_lr when fine-tuning")
    parser.add_argument("--set", dest="both_set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for fine-tuning and scratch alike (repeat it)")
    parser.add_argument("--offset", type=int, default=0,
                        help="where in each held-out class's shuffled images the few and the judged start (a "
                             "development draw: past --per-class + --judge-per-class, apart from the real one)")
    parser.add_argument("--reuse", action="store_true", help="keep --work's pretrained bundle if there is one")
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of fine-tuning and of scratch")
    parser.add_argument("--freeze-epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="keep folders and bundles here (default: a temporary folder)")
    args = parser.parse_args()

    shuffle, shuffled = random.Random(args.seed), {}
    for folder in sorted(path for path in args.cifar.iterdir() if path.is_dir()):
        shuffled[folder.name] = sorted(folder.iterdir())
        shuffle.shuffle(shuffled[folder.name])
    work = args.work or Path(tempfile.mkdtemp(prefix="cnncli-transfer-"))
    farm(work / "pretrain", {name: files[:args.pretrain_per_class] for name, files in shuffled.items()
                             if name not in args.held_out})
    # The few images to learn from and the many to judge on: apart, from one shuffle per class.
    start, judged = args.offset, args.offset + args.per_class
    farm(work / "few", {name: shuffled[name][start:judged] for name in args.held_out})
    farm(work / "judge", {name: shuffled[name][judged:judged + args.judge_per_class] for name in args.held_out})

    common = ["--set", f"train.threads={args.threads}", "--set", f"train.seed={args.seed}"]
    runs = {}
    pretrain_sets = [part for item in args.pretrain_set or ["augment={translate: 0.125, hflip: true}"]
                     for part in ("--set", item)]
    if args.reuse and (work / "pretrained" / "model.json").exists():
        runs["pretrain"] = {"accuracy": "reused", "wall_seconds": 0}
    else:
        runs["pretrain"] = cnncli("train", str(args.recipe), "--set", f"data.root={work / 'pretrain'}",
                                  "--set", f"train.epochs={args.pretrain_epochs}", *pretrain_sets, *common,
                                  "--out", str(work / "pretrained"), "--overwrite")
    few = ["--set", f"data.root={work / 'few'}", "--set", "data.split.test_fraction=0",
           "--set", f"train.epochs={args.epochs}", *common, *[part for item in args.both_set for part in ("--set", item)]]
    cnncli("train", str(args.recipe), *few, "--set", f"model.init={work / 'pretrained'}",
           "--set", f"train.freeze_epochs={args.freeze_epochs}",
           "--set", f"train.backbone_lr={args.backbone_lr}", "--out", str(work / "finetuned"), "--overwrite")
    cnncli("train", str(args.recipe), *few, "--out", str(work / "scratch"), "--overwrite")
    for name in ("finetuned", "scratch"):
        runs[name] = cnncli("eval", str(work / name), str(work / "judge"))
    for name, result in runs.items():
        print(json.dumps({"run": name, "accuracy": result.get("accuracy", result.get("metrics")),
                          "wall_seconds": result["wall_seconds"]}))
    gap = 100 * (runs["finetuned"]["accuracy"] - runs["scratch"]["accuracy"])
    print(json.dumps({"held_out": args.held_out, "per_class": args.per_class,
                      "judged_on": 2 * args.judge_per_class, "finetuned": runs["finetuned"]["accuracy"],
                      "scratch": runs["scratch"]["accuracy"], "gap_points": round(gap, 1), "work": str(work)}))


if __name__ == "__main__":
    main()
