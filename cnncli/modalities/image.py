"""Images as they are: decode, grayscale or RGB, resize, normalise, augment.

Encoded images are uint8 (C, H, W) tensors, four times smaller in memory than floats; the stem
converts them to floats and applies the per-channel normalisation fitted on the training split,
so normalisation travels with the weights and every caller of the model gets it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.limits import MAX_IMAGE_PIXELS
from cnncli.modalities.base import Encoded, Modality, state_numbers

STATISTICS_CHUNK = 256  # images per histogram pass when an in-memory split fits the normalisation
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
# The decoders those suffixes need (MPO: the multi-picture JPEG of some cameras). Pillow's other
# plugins stay off: EPS, for one, hands the file to Ghostscript.
PILLOW_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "TIFF", "WEBP", "PPM")
MAX_SIDE = 65536
# Images past MAX_IMAGE_PIXELS are refused with an error row, so Pillow's warning about the same
# images (between its threshold and twice it) would only repeat it on stderr.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# What Pillow raises on a damaged or hostile file besides OSError: each becomes that file's error.
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError,
                 ZeroDivisionError, EOFError, MemoryError, Image.DecompressionBombError)


@dataclass
class ImageOptions:
    """`data.image`: how an image file becomes a tensor."""

    size: list[int] | None = None  # [height, width]; None keeps the first training image's size
    color: Literal["grayscale", "rgb"] = "grayscale"
    resize: Literal["stretch", "pad", "crop"] = "stretch"  # how another aspect ratio fits `size`
    normalize: bool = True  # per-channel mean/std fitted on the training split


@dataclass
class ImageAugment:
    """The `augment` keys of images."""

    shift: float = 0.0  # random translation, as a fraction of height/width
    rotate: float = 0.0  # random rotation in degrees, +-
    hflip: bool = False  # random horizontal flip


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
    default_options = {"size": [64, 64], "color": "rgb", "resize": "pad"}  # photos of any size and shape

    def __init__(self, options: ImageOptions, augment: ImageAugment | None = None,
                 mean: list[float] | None = None, std: list[float] | None = None):
        self.options = options
        self.augment_config = augment or ImageAugment()
        channels = 1 if options.color == "grayscale" else 3
        self.mean = mean or [0.0] * channels
        self.std = std or [1.0] * channels

    @classmethod
    def from_config(cls, config: Any) -> "ImageModality":
        return cls(cls.options_from(config), cls.augment_from(config))

    @classmethod
    def check_options(cls, options: ImageOptions) -> list[tuple[str, str]]:
        size = options.size
        if size is None or (len(size) == 2 and 0 < min(size) and max(size) <= MAX_SIDE):
            return []
        return [("size", f"must be [height, width], each from 1 to {MAX_SIDE:,}")]

    @classmethod
    def check_augment(cls, augment: Any) -> list[tuple[str, str]]:
        checks = [("shift", 0 <= augment.shift <= 1, "must be a fraction from 0 to 1"),
                  ("rotate", 0 <= augment.rotate <= 180, "must be from 0 to 180 degrees")]
        return [(key, message) for key, ok, message in checks if not ok]

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ImageModality":
        options = ImageOptions(**state["options"])
        channels = 1 if options.color == "grayscale" else 3
        return cls(options, None, state_numbers(state, "mean", channels), state_numbers(state, "std", channels))

    def state_dict(self) -> dict[str, Any]:
        return {"options": dataclasses.asdict(self.options), "mean": self.mean, "std": self.std}

    @property
    def channels(self) -> int:
        return 1 if self.options.color == "grayscale" else 3

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.uint8  # a quarter of the memory of floats; the stem converts

    @property
    def shape_from_recipe(self) -> bool:
        return self.options.size is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.options.size is None:
            raise CnncliError("data.image.size: unknown until fitted on training images; set it in the recipe")
        return (self.channels, *self.options.size)

    def fit(self, samples) -> None:
        """Without data.image.size, take the first readable training image's (unreadable ones
        are reported as skipped when the split is encoded)."""
        if self.options.size is not None or not samples:
            return
        for sample in samples:
            try:
                self.options.size = list(self._decode(sample).shape[1:])
                return
            except CnncliError as error:
                problem = error
        raise CnncliError(f"data.train: no training image could be read, e.g. {problem}")

    def encode(self, sample: Sample) -> torch.Tensor:
        image = self._decode(sample)
        if list(image.shape[1:]) != list(self.options.size or image.shape[1:]):
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
        if not self.options.normalize:
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

    def build_stem(self) -> nn.Module:
        return Normalize(self.mean, self.std)

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        settings = self.augment_config
        if not (settings.shift or settings.rotate or settings.hflip):
            return batch

        n, device = len(batch), batch.device
        uniform = lambda: torch.rand(n, generator=generator, device=device) * 2 - 1  # noqa: E731
        angle = uniform() * math.radians(settings.rotate)
        scale_x = torch.ones(n, device=device)
        if settings.hflip:
            scale_x = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -scale_x, scale_x)
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0] = torch.cos(angle) * scale_x
        theta[:, 0, 1] = -torch.sin(angle)
        theta[:, 1, 0] = torch.sin(angle) * scale_x
        theta[:, 1, 1] = torch.cos(angle)
        theta[:, 0, 2] = uniform() * 2 * settings.shift
        theta[:, 1, 2] = uniform() * 2 * settings.shift
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        return F.grid_sample(batch.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def describe(self) -> str:
        height, width = self.options.size or ("?", "?")
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
            converted = upright.convert("L" if self.channels == 1 else "RGB")
            if self.options.size and list(converted.size[::-1]) != list(self.options.size):
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
        with Image.open(locator, formats=PILLOW_FORMATS) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise CnncliError(f"{locator}: {width:,} x {height:,} pixels is more than the "
                                  f"{MAX_IMAGE_PIXELS:,} an image may have")
            opened.load()
            yield ImageOps.exif_transpose(opened)
    except FileNotFoundError:
        raise CnncliError(f"{locator}: no such file") from None
    except DECODE_ERRORS as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CnncliError(f"{locator}: not a readable image ({reason})") from None


def _to_chw(array) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8 array -> contiguous (C, H, W) tensor."""
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()
