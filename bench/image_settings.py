"""Which of airbench's training settings help cnncli's conv groups? One run per variant, one row each.

Written to weigh airbench's settings (Jordan 2024) before the general image recipe took them
(docs/BENCHMARKS.md, "Airbench's training settings, weighed in cnncli"). Every variant trains conv
groups of `--width` (16-64-64 by default) with flips and shifts on PHOTOS (split folders: train/
and val/, each holding class folders) for `--epochs` epochs, keeps the last epoch's weights, and
scores validation three ways: the picture alone, with its mirror image, and with mirror and
one-pixel shifts (`data.image.tta`). Variants run `--parallel` at a time, one thread each.

    python bench/image_settings.py C10K --out /tmp/settings      # all variants, about 45 minutes
    python bench/image_settings.py C10K --out /tmp/settings kept lookahead
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cnncli.modalities.image_backbone import ConvGroupShape, conv_group_backbone

SESSION_14 = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "decay_norm_and_bias": False,
              "schedule": "onecycle", "label_smoothing": 0.1, "batch_size": 128, "keep": "last", "threads": 1}
KEPT = {"train.nesterov": True, "train.label_smoothing": 0.2, "augment.translate": 0.0625}
VARIANTS = {  # name: (what it is, overrides of the session-14 recipe)
    "session14": ("momentum 0.9, label smoothing 0.1, 4-pixel shifts", {}),
    "nesterov-4px": ("Nesterov, label smoothing 0.2, 4-pixel shifts",
                     {"train.nesterov": True, "train.label_smoothing": 0.2}),
    "momentum-2px": ("momentum 0.9, label smoothing 0.2, 2-pixel shifts",
                     {"train.label_smoothing": 0.2, "augment.translate": 0.0625}),
    "kept": ("Nesterov, label smoothing 0.2, 2-pixel shifts", KEPT),
    "lookahead": ("kept, with train.lookahead", {**KEPT, "train.lookahead": True}),
    "lookahead-256": ("kept, with lookahead, batch 256, lr 0.2",
                      {**KEPT, "train.lookahead": True, "train.batch_size": 256, "train.lr": 0.2}),
    "floor": ("kept, whiten floor 5e-4", {**KEPT, "whiten.floor": 0.0005}),
    "floor-strong": ("kept, whiten floor 5e-4, colour jitter 0.3, erasing 0.5, mixup 0.2",
                     {**KEPT, "whiten.floor": 0.0005, "augment.color_jitter": 0.3, "augment.erase": 0.5,
                      "train.mixup": 0.2}),
}


def recipe(photos: str, overrides: dict, width: int, epochs: int) -> dict:
    """The session-14 image recipe with flip fixed, conv groups of `width` written out, and `overrides`."""
    blocks = conv_group_backbone(ConvGroupShape(1, 3, width))  # fresh dicts: the whiten block's may change
    result = {"data": {"modality": "image", "root": photos, "split": {"test_fraction": 0.0},
                       "image": {"size": "auto", "color": "auto", "resize": "pad", "tta": "flip"}},
              "model": {"blocks": blocks}, "train": {**SESSION_14, "epochs": epochs},
              "augment": {"hflip": True, "translate": 0.125}}
    for key, value in overrides.items():
        section, name = key.split(".")
        if section == "whiten":
            blocks[0]["whiten"][name] = value
        else:
            result[section][name] = value
    return result


def run(name: str, photos: str, out: Path, width: int, epochs: int) -> str:
    """Train one variant in its own process (one thread) and score its validation three ways."""
    import yaml

    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe(photos, VARIANTS[name][1], width, epochs)))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command in ([sys.executable, "-m", "cnncli", "train", str(path), "--out", str(out / name), "--overwrite"],
                    [sys.executable, __file__, "--score", str(out / name), str(Path(photos) / "val")]):
        done = subprocess.run(command, capture_output=True, text=True, env=environment)
        if done.returncode:
            raise SystemExit(f"{name}: {' '.join(command[1:3])} failed:\n{done.stderr[-2000:]}")
    return f"| {VARIANTS[name][0]} | {done.stdout.strip()} |"


def score(bundle: str, photos: str) -> None:
    """Print validation accuracy: alone | flip | flip-shift."""
    from cnncli.bundle.io import load_bundle
    from cnncli.modalities.image_augment import MirrorViews
    from cnncli.verbs.evaluate import evaluate

    loaded = load_bundle(bundle)
    accuracies = []
    for views in (None, MirrorViews(), MirrorViews(shifts=True)):
        loaded.network.views = views
        accuracies.append(f"{evaluate(loaded, [photos])['accuracy']:.4f}")
    print(" | ".join(accuracies))


def main() -> None:
    if sys.argv[1:2] == ["--score"]:
        score(*sys.argv[2:4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", help="split folders: train/ and val/, each holding one folder per class")
    parser.add_argument("variants", nargs="*", help=f"of: {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--out", type=Path, required=True, help="a folder for the recipes and bundles")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_intermixed_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    print("| variant | alone | flip | flip-shift |\n| --- | --- | --- | --- |", flush=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        for row in pool.map(lambda name: run(name, args.photos, args.out, args.width, args.epochs),
                            args.variants or list(VARIANTS)):
            print(row, flush=True)


if __name__ == "__main__":
    main()
