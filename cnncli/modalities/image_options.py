"""The `data.image` recipe section, the image `augment` keys, and the general image recipe.

The general recipe (recipes/image.yaml) reads from the photos what depends on them:

- `data.image.size: auto` (`auto_size`): the training images' median height and width, scaled
  down until the longer side is at most AUTO_SIDE_CAP, each rounded to a multiple of the
  backbone's first stride and made large enough for its pools; 32 x 32 images stay 32 x 32.
- `model.blocks: auto` (cnncli.modalities.image_backbone): a network whose stem and number of
  stages follow the image size and whose width follows the number of training images (with a
  time budget, a narrower one may be taken: cnncli.training.budget).
- `augment: auto` (`augment_candidates`): flip, shift, none, strong; chosen on validation, so
  that mirror images lose where they change the class (digits, text) and strong regularisation
  wins only where the photos are few enough to be learnt by heart.
"""

from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass
from typing import Any, Literal, Union

from cnncli.errors import CnncliError
from cnncli.modalities.image_backbone import size_rule

MAX_SIDE = 65536
AUTO_SIDE_CAP = 224  # the longest side size: auto keeps; larger photos are scaled down
AUTO_SIZE_SAMPLES = 1000  # training images whose sizes are read for size: auto (evenly spaced)
# pad-and-crop shift of every candidate that shifts: airbench's 2 pixels of 32 (Jordan 2024), for the
# short runs a budget gives; CIFAR-10's usual 4 pixels scored lower in 10 epochs (docs/BENCHMARKS.md)
TRANSLATE = 0.0625


@dataclass
class ImageOptions:
    """`data.image`: how an image file becomes a tensor."""

    # [height, width]; None keeps the first training image's size; auto: the training images' median,
    # capped and rounded for the backbone (auto_size)
    size: Union[list[int], Literal["auto"], None] = None
    color: Literal["grayscale", "rgb", "auto"] = "grayscale"  # auto: read from the training images (fitted_color)
    resize: Literal["stretch", "pad", "crop"] = "stretch"  # how another aspect ratio fits `size`
    normalize: bool = True  # per-channel mean/std fitted on the training split
    # what a prediction averages over: the picture alone (none), it and its mirror image (flip), both
    # also shifted a pixel two ways (flip-shift, three times flip's cost); auto: flip when training
    # flipped pictures (a bundle stores which)
    tta: Literal["none", "flip", "flip-shift", "auto"] = "none"


@dataclass
class ImageAugment:
    """The `augment` keys of images."""

    shift: float = 0.0  # random translation, as a fraction of height/width
    rotate: float = 0.0  # random rotation in degrees, +-
    hflip: bool = False  # random horizontal flip
    translate: float = 0.0  # random shift by whole pixels, up to this fraction of each side (pad and crop)
    color_jitter: float = 0.0  # brightness, contrast and saturation each scaled by 1 +- this
    erase: float = 0.0  # probability of filling a random rectangle of the image with noise


def option_problems(options: ImageOptions) -> list[tuple[str, str]]:
    """(key, what is wrong) for each `data.image` value out of its range."""
    size = options.size
    if size is None or size == "auto" or (len(size) == 2 and 0 < min(size) and max(size) <= MAX_SIDE):
        return []
    return [("size", f"must be [height, width], each from 1 to {MAX_SIDE:,}, or auto")]


def augment_problems(augment: Any) -> list[tuple[str, str]]:
    """(key, what is wrong) for each image `augment` value out of its range."""
    checks = [("shift", 0 <= augment.shift <= 1, "must be a fraction from 0 to 1"),
              ("rotate", 0 <= augment.rotate <= 180, "must be from 0 to 180 degrees"),
              ("translate", 0 <= augment.translate <= 1, "must be a fraction from 0 to 1"),
              ("color_jitter", 0 <= augment.color_jitter < 1, "must be in [0, 1)"),
              ("erase", 0 <= augment.erase <= 1, "must be a probability from 0 to 1")]
    return [(key, message) for key, ok, message in checks if not ok]


def auto_size(sizes: list[tuple[int, int]]) -> list[int]:
    """[height, width] for `data.image.size: auto` from the (height, width) of training images."""
    height = statistics.median(size[0] for size in sizes)
    width = statistics.median(size[1] for size in sizes)
    scale = min(1.0, AUTO_SIDE_CAP / max(height, width))
    height, width = height * scale, width * scale
    stride, smallest = size_rule(round(max(height, width)))
    return [max(smallest, stride * round(side / stride)) for side in (height, width)]


def read_headers(samples, stored_header) -> list[tuple[int, int, bool]]:
    """(height, width, stored in gray) of up to AUTO_SIZE_SAMPLES training images evenly spaced,
    each from one read of its header (`stored_header(sample)`); unreadable ones are left out (they
    are reported when the split is encoded)."""
    headers = []
    for position in evenly_spaced(len(samples), AUTO_SIZE_SAMPLES):
        with contextlib.suppress(CnncliError):
            headers.append(stored_header(samples[position]))
    return headers


def fitted_size(headers: list[tuple[int, int, bool]], example: str) -> tuple[list[int], list[str]]:
    """data.image.size: auto from training images' headers (read_headers): the size, and the line
    that says how it was chosen. `example` names a training image for the error when none was read."""
    if not headers:
        raise CnncliError(f"data.train: no training image could be read, e.g. {example}")
    size = auto_size([(height, width) for height, width, _ in headers])
    return size, [f"data.image.size auto: {size[0]} x {size[1]} (the median height and width of {len(headers):,} "
                  "training images, rounded for the backbone)"]


def fitted_color(headers: list[tuple[int, int, bool]]) -> tuple[str, list[str]]:
    """data.image.color: auto from training images' headers (read_headers): grayscale when every
    one read is stored in gray levels, else rgb; and the line that says so. One channel instead of
    three makes the first layers of a small network a third as costly."""
    color = "grayscale" if headers and all(gray for _, _, gray in headers) else "rgb"
    why = "every one is stored in gray levels" if color == "grayscale" else "some are in colour"
    return color, [f"data.image.color auto: {color} ({why}, of {len(headers):,} training images read)"]


def evenly_spaced(count: int, most: int) -> list[int]:
    """Up to `most` positions spread over range(count): a sample that is the same on every run."""
    if count <= most:
        return list(range(count))
    return [position * count // most for position in range(most)]


def augment_candidates(side: int) -> list[tuple[str, dict[str, Any]]]:
    """augment: auto's candidates for images, the first being the fallback when there is nothing
    to validate on (most photos may be flipped). `side`: the fitted input's shorter side."""
    shift = round(max(1, round(TRANSLATE * side)) / side, 4)
    off = {"augment.translate": 0.0, "augment.hflip": False, "augment.color_jitter": 0.0, "augment.erase": 0.0,
           "train.mixup": 0.0}
    return [("flip", {**off, "augment.translate": shift, "augment.hflip": True}),
            ("shift", {**off, "augment.translate": shift}),
            ("none", off),
            ("strong", {"augment.translate": shift, "augment.hflip": True, "augment.color_jitter": 0.3,
                        "augment.erase": 0.5, "train.mixup": 0.2})]


# The general image recipe (recipes/image.yaml, and `cnncli train FOLDER` on images): every
# picture at the data's own size and colours, conv groups sized to the data, the augmentation
# chosen on validation by short trials, SGD with Nesterov's momentum over one cycle of the learning
# rate, label smoothing 0.2, weight decay on weights only. Chosen on part of CIFAR-10's training
# images (docs/BENCHMARKS.md); tests/test_image_recipe.py keeps recipes/image.yaml equal.
GENERAL_RECIPE = {
    "data": {"split": {"test_fraction": 0.1, "val_fraction": 0.1, "seed": 0},
             "image": {"size": "auto", "color": "auto", "resize": "pad", "tta": "auto"}},
    "model": {"blocks": "auto"},
    "train": {"epochs": 30, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
              "weight_decay": 0.0005, "decay_norm_and_bias": False, "schedule": "onecycle",
              "label_smoothing": 0.2, "keep": "best", "auto_share": 0.1},
    "augment": "auto",
}
