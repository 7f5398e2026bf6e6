"""Does a conv-group net learn at all under an augmentation? A short run per variant, one line each.

Written when the general recipe's strong candidate (random erasing) left a net with a whiten block
at chance on CIFAR-10 (docs/BENCHMARKS.md, "Photos in one command"). Each variant trains conv
groups 16-64-64 (with the whiten block unless `nowhiten`) for `--steps` steps of 128 on PHOTOS
(split folders or class folders) and prints its epochs' training loss, validation loss and accuracy.

    python bench/augment_check.py PHOTOS flip flip-erase flip-mixup flip-jitter flip-erase-nowhiten
"""

from __future__ import annotations

import argparse
import tempfile

from cnncli.modalities.image_backbone import ConvGroupShape, conv_group_backbone
from cnncli.recipe.config import load_config
from cnncli.training.train import train


def recipe(photos: str, variant: str, steps: int) -> dict:
    augment = {"translate": 0.125, "hflip": "flip" in variant}
    if "jitter" in variant:
        augment["color_jitter"] = 0.3
    if "erase" in variant:
        augment["erase"] = 0.5
    settings = {"steps": steps, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                "weight_decay": 5e-4, "decay_norm_and_bias": False, "schedule": "onecycle", "label_smoothing": 0.1,
                "threads": 2, "keep": "last", "mixup": 0.2 if "mixup" in variant else 0.0}
    blocks = conv_group_backbone(ConvGroupShape(1, 3, 16))
    return {"data": {"modality": "image", "root": photos, "image": {"size": [32, 32], "color": "rgb"},
                     "split": {"test_fraction": 0.0}},
            "model": {"blocks": blocks[1:] if "nowhiten" in variant else blocks}, "train": settings,
            "augment": augment}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--steps", type=int, default=80)
    args = parser.parse_args()
    for variant in args.variants:
        with tempfile.TemporaryDirectory() as out:
            outcome = train(load_config(recipe(args.photos, variant, args.steps)), out, overwrite=True)
        for record in outcome.history:
            print(variant, record["epoch"], record["train_loss"], record.get("val_loss"), record.get("val_accuracy"),
                  flush=True)


if __name__ == "__main__":
    main()
