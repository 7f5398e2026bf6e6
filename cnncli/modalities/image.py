"""Images as they are: decode, grayscale or RGB, resize, normalise, augment.

Encoded images are uint8 (C, H, W) tensors, four times smaller in memory than floats; the stem
converts them to floats and applies the per-channel normalisation fitted on the training split,
so normalisation travels with the weights and every caller of the model gets it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.files.reading import open_regular
from cnncli.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from cnncli.modalities.base import Modality
from cnncli.modalities.encoded import Encoded, state_numbers
from cnncli.modalities.image_augment import MirrorViews, augment_images
from cnncli.modalities.image_backbone import auto_backbones
from cnncli.modalities.image_options import (
    GENERAL_RECIPE,
    ImageAugment,
    ImageOptions,
    augment_candidates,
    augment_problems,
    fitted_color,
    fitted_size,
    option_problems,
    read_headers,
)

STATISTICS_CHUNK = 256  # images per histogram pass when an in-memory split fits the normalisation
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
# The decoders those suffixes need (MPO: the multi-picture JPEG of some cameras). Pillow's other
# plugins stay off: EPS, for one, hands the file to Ghostscript. Only those this Pillow has are
# asked for: Image.open raises KeyError for a format it lacks (Pillow 13 reads MPO as JPEG).
PILLOW_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "TIFF", "WEBP", "PPM")
Image.init()
READABLE_FORMATS = tuple(kind for kind in PILLOW_FORMATS if kind in Image.OPEN)
# Pillow's modes of more than 8 bits per pixel, which convert("L") would clip at 255 instead of scale.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
EXIF_ORIENTATION = 0x0112  # 5 to 8: the picture is stored turned by 90 degrees
# Images past MAX_IMAGE_PIXELS are refused with an error row, so Pillow's warning about the same
# images (between its threshold and twice it) would only repeat it on stderr.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# What Pillow raises on a damaged or hostile file besides OSError: each becomes that file's error.
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError,
                 ZeroDivisionError, EOFError, MemoryError, Image.DecompressionBombError)


class Normalize(nn.Module):
    """uint8 or 0..255 float pixels -> (x / 255 - mean) / std, per channel (stored as buffers)."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


class ImageModality(Modality):
    name = "image"
    extensions = IMAGE_EXTENSIONS
    options_type = ImageOptions
    augment_type = ImageAugment
    default_recipe = GENERAL_RECIPE  # photos of any size and shape (recipes/image.yaml)

    def __init__(self, options: ImageOptions, augment: ImageAugment | None = None,
                 mean: list[float] | None = None, std: list[float] | None = None):
        self.options = options
        self.augment_config = augment or ImageAugment()
        channels = 1 if options.color == "grayscale" else 3
        self.mean = mean or [0.0] * channels
        self.std = std or [1.0] * channels
        self.statistics_fixed = False  # the pretrained weights' mean and std, not the data's
        self.fit_notes: list[str] = []  # what fitting chose from the data (size: auto)

    @classmethod
    def from_config(cls, config: Any) -> "ImageModality":
        return cls(cls.options_from(config), cls.augment_from(config))

    @classmethod
    def check_options(cls, options: ImageOptions) -> list[tuple[str, str]]:
        return option_problems(options)

    @classmethod
    def check_augment(cls, augment: Any) -> list[tuple[str, str]]:
        return augment_problems(augment)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ImageModality":
        options = ImageOptions(**state["options"])
        channels = 1 if options.color == "grayscale" else 3
        return cls(options, None, state_numbers(state, "mean", channels), state_numbers(state, "std", channels))

    def state_dict(self) -> dict[str, Any]:
        options = {**dataclasses.asdict(self.options), "tta": self.test_time_views}
        return {"options": options, "mean": self.mean, "std": self.std}

    @property
    def test_time_views(self) -> str:
        """data.image.tta resolved: auto scores the mirror image too when training flips pictures
        (not the shifted views of flip-shift: on CIFAR-10 they added 0.0 to 0.6 points for three
        times the cost of a prediction; docs/BENCHMARKS.md)."""
        if self.options.tta != "auto":
            return self.options.tta
        return "flip" if self.augment_config.hflip else "none"

    def test_views(self) -> nn.Module | None:
        views = self.test_time_views
        return None if views == "none" else MirrorViews(shifts=views == "flip-shift")

    @property
    def channels(self) -> int:
        return 1 if self.options.color == "grayscale" else 3

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.uint8  # a quarter of the memory of floats; the stem converts

    @property
    def shape_from_recipe(self) -> bool:
        return isinstance(self.options.size, list)

    @property
    def input_shape(self) -> tuple[int, ...]:
        if not isinstance(self.options.size, list):
            raise CnncliError("data.image.size: unknown until fitted on training images; set it in the recipe")
        return (self.channels, *self.options.size)

    def fit(self, samples) -> None:
        """Without data.image.size, take the first readable training image's (unreadable ones
        are reported as skipped when the split is encoded); with size: auto or color: auto, read
        the headers of up to AUTO_SIZE_SAMPLES of them and take their median size (auto_size) and
        whether all are gray (fitted_color)."""
        reading = bool(samples) and "auto" in (self.options.color, self.options.size)
        headers = read_headers(samples, _stored_header) if reading else []  # each file's header read once
        if self.options.color == "auto" and samples:
            self.options.color, self.fit_notes = fitted_color(headers)
            self.mean, self.std = [0.0] * self.channels, [1.0] * self.channels
        if self.options.size == "auto" and samples:
            self.options.size, notes = fitted_size(headers, samples[0].locator)
            self.fit_notes = self.fit_notes + notes
        if self.options.size is not None or not samples:
            return
        for sample in samples:
            try:
                self.options.size = list(self._decode(sample).shape[1:])
                return
            except CnncliError as error:
                problem = error
        raise CnncliError(f"data.train: no training image could be read, e.g. {problem}")

    def fitted_notes(self) -> list[str]:
        return list(self.fit_notes)

    def auto_blocks(self, samples: int) -> list[tuple[list, str]]:
        """model.blocks: auto: the nets image_backbone sizes for the input and `samples` training
        images, each with the line that says what it is; the data's first."""
        return auto_backbones(list(self.input_shape[1:]), samples)

    def regularisation_grid(self, config: Any) -> list[tuple[str, dict[str, Any]]]:
        """augment: auto's candidates: none, shift, shift and flip, strong (image_options)."""
        return augment_candidates(min(self.input_shape[1:]))

    def encode(self, sample: Sample) -> torch.Tensor:
        image = self._decode(sample)
        if isinstance(self.options.size, list) and list(image.shape[1:]) != self.options.size:
            image = self._resize_tensor(image, sample)
        return image

    def encode_many(self, samples, progress=None):
        # Fast path for in-memory sources (idx files): one stack instead of one call per image.
        if samples and all(isinstance(s.content, torch.Tensor) and s.content.dim() == 2 for s in samples):
            stacked = torch.stack([s.content for s in samples])
            if stacked.dtype == torch.uint8 and list(stacked.shape[1:]) == list(self.input_shape[1:]):
                if progress:
                    progress(len(samples))
                tensor = stacked.unsqueeze(1).expand(-1, self.channels, -1, -1).contiguous()
                return Encoded(tensor, list(range(len(samples))), {})
        return super().encode_many(samples, progress)

    def fit_encoded(self, encoded: torch.Tensor) -> None:
        self.fit_encoded_chunks(encoded.split(STATISTICS_CHUNK))

    def fit_encoded_chunks(self, chunks) -> None:
        """Per-channel mean and std over every training pixel, from a histogram of each channel's
        256 values: exact, and with no float copy of the pixels. Float copies (14 MB per 64
        images at 96 x 96) fragmented the allocator's heap: a streamed 60,000-image split left
        the process 1.7 GB larger, and every DataLoader worker forked from it counted that too."""
        if not self.options.normalize or self.statistics_fixed:
            return
        counts = torch.zeros(self.channels, 256, dtype=torch.int64)
        for chunk in chunks:
            for channel in range(self.channels):
                counts[channel] += torch.bincount(chunk[:, channel].reshape(-1), minlength=256)
        total = int(counts[0].sum())
        if total == 0:
            return
        values = torch.arange(256, dtype=torch.float64) / 255.0
        mean = (counts * values).sum(dim=1) / total
        variance = (counts * values ** 2).sum(dim=1) / total - mean ** 2
        self.mean = [round(float(m), 6) for m in mean]
        self.std = [round(max(float(v), 1e-12) ** 0.5, 6) for v in variance]

    def use_preprocessing(self, expected: dict[str, Any]) -> list[str]:
        """Pretrained weights' pixels: their input size unless data.image.size is set, and with
        data.image.normalize their mean and std instead of the data's (one channel: the average)."""
        notes = []
        size = expected.get("input_size")
        if self.options.size is None and size and len(size) == 3:
            self.options.size = [int(size[1]), int(size[2])]
            notes.append(f"data.image.size: {self.options.size}, the size the pretrained weights expect")
        mean, std = expected.get("mean"), expected.get("std")
        if self.options.normalize and mean and std and len(mean) == len(std):
            if self.channels == 1:
                mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
            if len(mean) == self.channels:
                self.mean, self.std = [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]
                self.statistics_fixed = True
                notes.append(f"normalising with the pretrained weights' mean {self.mean} and std {self.std}")
        return notes

    def build_stem(self) -> nn.Module:
        return Normalize(self.mean, self.std)

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        settings = self.augment_config
        if not any(dataclasses.astuple(settings)):
            return batch
        return augment_images(batch, settings, generator)

    def describe(self) -> str:
        height, width = self.options.size if isinstance(self.options.size, list) else ("?", "?")
        stats = f"mean {self.mean} std {self.std}" if self.options.normalize else "no normalisation"
        return f"image {self.channels}x{height}x{width} {self.options.color}, resize {self.options.resize}, {stats}"

    def preprocessing(self) -> dict[str, Any]:
        """For a server: decode, turn upright, convert, resize to the encoded uint8 pixels; the
        network normalises them itself."""
        _, height, width = self.input_shape
        fits = {"stretch": "resize to height x width, ignoring the aspect ratio",
                "pad": "scale to fit inside height x width keeping the aspect ratio, centre it, pad with black",
                "crop": "scale to cover height x width keeping the aspect ratio, crop the centre"}
        mode = "grayscale (PIL mode L)" if self.channels == 1 else "RGB (PIL mode RGB)"
        return {"steps": ["decode the image file", "turn it upright by its EXIF orientation", f"convert to {mode}",
                          f"{fits[self.options.resize]} (bilinear, as PIL's Image.resize / ImageOps)",
                          "stack as uint8 (channels, height, width)"],
                "color": self.options.color, "size": [height, width], "resize": self.options.resize,
                "interpolation": "bilinear", "mean": self.mean, "std": self.std,
                "normalization": "inside the graph: (pixels / 255 - mean) / std per channel"}

    def draw(self, sample: Sample, path: Path, network: nn.Module | None = None) -> None:
        from cnncli.output.plots import save_image

        save_image(self.encode(sample), path, title=Path(sample.locator).name)

    def draw_heatmap(self, sample: Sample, heat: torch.Tensor, network: nn.Module, caption: str) -> bytes:
        """The image's own pixels (colour kept) with the heat map over them."""
        from cnncli.output.plots import figure_png, overlay_heat, plt

        figure, axis = plt.subplots(figsize=(4.5, 4.5))
        self._show(axis, self.encode(sample))
        overlay_heat(axis, heat)
        axis.set_title(caption, fontsize=9)
        return figure_png(figure)

    def draw_thumbnail(self, sample: Sample, axis, network: nn.Module | None = None) -> None:
        self._show(axis, self.encode(sample))

    @staticmethod
    def _show(axis, pixels: torch.Tensor) -> None:
        array = pixels.numpy()
        if array.shape[0] == 1:
            axis.imshow(array[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest", aspect="auto")
        else:
            axis.imshow(array.transpose(1, 2, 0), interpolation="nearest", aspect="auto")
        axis.axis("off")

    def measure(self, sample: Sample) -> dict[str, Any]:
        """Height, width and colour mode as stored (before resizing), after a full decode."""
        if isinstance(sample.content, torch.Tensor):
            image = sample.content
            channels = 1 if image.dim() == 2 else image.shape[0]
            return {"height": int(image.shape[-2]), "width": int(image.shape[-1]),
                    "mode": {1: "L", 3: "RGB"}.get(channels, f"{channels} channels")}
        with _opened(sample.locator) as upright:
            return {"height": upright.height, "width": upright.width, "mode": upright.mode}

    # -- decoding ------------------------------------------------------------------------------

    def _decode(self, sample: Sample) -> torch.Tensor:
        """Sample -> uint8 (C, H, W) in the recipe's colour mode, not yet resized."""
        if isinstance(sample.content, torch.Tensor):
            image = sample.content
            image = image.unsqueeze(0) if image.dim() == 2 else image
            if image.shape[0] == 1 and self.channels == 3:
                image = image.expand(3, -1, -1)
            elif image.shape[0] == 3 and self.channels == 1:
                image = image.float().mean(0, keepdim=True).round()
            return image.to(torch.uint8)

        with _opened(sample.locator) as upright:
            converted = _eight_bit(upright).convert("L" if self.channels == 1 else "RGB")
            if isinstance(self.options.size, list) and list(converted.size[::-1]) != self.options.size:
                converted = self._resize_pil(converted)
        return _to_chw(np.asarray(converted, dtype=np.uint8))

    def _resize_pil(self, image):
        height, width = self.options.size
        if self.options.resize == "stretch":
            return image.resize((width, height), Image.BILINEAR)
        if self.options.resize == "crop":
            return ImageOps.fit(image, (width, height), Image.BILINEAR)
        return ImageOps.pad(image, (width, height), Image.BILINEAR, color=0)

    def _resize_tensor(self, image: torch.Tensor, sample: Sample) -> torch.Tensor:
        array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        return _to_chw(np.asarray(self._resize_pil(Image.fromarray(array))))


@contextlib.contextmanager
def _opened(locator: str) -> Iterator[Image.Image]:
    """An image file fully decoded and turned upright (phone photos store their rotation in
    EXIF); any failure to read it, here or in the caller's block, is one error naming the file."""
    try:
        with open_regular(locator, "image") as stream, Image.open(stream, formats=READABLE_FORMATS) as opened:
            if os.fstat(stream.fileno()).st_size > MAX_IMAGE_BYTES:
                raise CnncliError(f"{locator}: larger than {MAX_IMAGE_BYTES:,} bytes; not an image")
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise CnncliError(f"{locator}: {width:,} x {height:,} pixels is more than the "
                                  f"{MAX_IMAGE_PIXELS:,} an image may have")
            opened.load()
            yield ImageOps.exif_transpose(opened)
    except UnidentifiedImageError:  # (its message names the open stream, a number that varies by process)
        raise CnncliError(f"{locator}: not a readable image (cannot identify image file)") from None
    except DECODE_ERRORS as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CnncliError(f"{locator}: not a readable image ({reason})") from None


GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # Pillow's modes of gray levels


def _stored_header(sample: Sample) -> tuple[int, int, bool]:
    """(height, width, stored in gray levels) of an image upright, from its header (EXIF turns of
    90 degrees swap the sides; an idx array is always gray)."""
    if isinstance(sample.content, torch.Tensor):
        content = sample.content
        return int(content.shape[-2]), int(content.shape[-1]), content.dim() == 2 or content.shape[0] == 1
    try:
        with open_regular(sample.locator, "image") as stream, Image.open(stream, formats=READABLE_FORMATS) as opened:
            width, height = opened.size
            turned = opened.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
            gray = opened.mode in GRAY_MODES
    except DECODE_ERRORS as error:
        raise CnncliError(f"{sample.locator}: not a readable image ({error})") from None
    return (width, height, gray) if turned else (height, width, gray)


def _eight_bit(image: Image.Image) -> Image.Image:
    """An image of 16-bit (or 32-bit, or float) gray levels as 8-bit ones, scaled rather than
    clipped: 16-bit levels keep their top byte (v * 257 >> 8 = v), so a 16-bit copy of an 8-bit
    image reads as the original; floats from 0 to 1 are stretched to 0..255, and other ranges
    spread over it."""
    if image.mode not in WIDE_MODES:
        return image
    levels = np.asarray(image)
    if image.mode.startswith("I;16") or (image.mode == "I" and levels.min() >= 0 and levels.max() <= 65535):
        return Image.fromarray((levels.astype(np.uint32) >> 8).astype(np.uint8))
    levels = np.nan_to_num(levels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(levels.min()), float(levels.max())
    if 0 <= low and high <= 1 and image.mode == "F":
        levels = levels * 255
    elif low < 0 or high > 255:
        levels = (levels - low) * (255.0 / (high - low) if high > low else 0.0)
    return Image.fromarray(levels.round().astype(np.uint8))


def _to_chw(array) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8 array -> contiguous (C, H, W) tensor."""
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()
