"""Random transforms of a batch of images, on its device, in one pass each: no per-image loop.

Pixels stay on the 0..255 scale of the encoded uint8 images (the stem normalises them), as
floats once anything has touched them. The order is geometry (an affine warp for `shift` and
`rotate`, or whole-pixel `translate`, and the flip), then colour, then erasing, as in
torchvision's RandAugment-era recipes. `MirrorViews` is the one transform of prediction time.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ERASED_AREA = (0.02, 0.33)  # share of the picture one erased rectangle covers (Zhong et al. 2020)
ERASED_ASPECT = (0.3, 3.3)  # its height / width


def augment_images(batch: torch.Tensor, settings: Any, generator: torch.Generator) -> torch.Tensor:
    """`batch` (N, C, H, W) with the `augment` settings of images applied."""
    if settings.shift or settings.rotate:
        batch = warp(batch, settings.shift, settings.rotate, settings.hflip, generator)
    else:
        if settings.translate:
            batch = translate(batch, settings.translate, generator)
        if settings.hflip:
            batch = flip(batch, generator)
    if settings.color_jitter:
        batch = color_jitter(batch, settings.color_jitter, generator)
    if settings.erase:
        batch = erase(batch, settings.erase, generator)
    return batch


def uniform(count: int, generator: torch.Generator, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, device=generator.device)


def warp(batch: torch.Tensor, shift: float, rotate: float, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """One bilinear affine warp: a shift by up to `shift` of the side, a turn by up to `rotate`
    degrees and, with `hflip`, a mirror for half the images."""
    n, device = len(batch), batch.device
    angle = uniform(n, generator) * math.radians(rotate)
    scale_x = torch.ones(n, device=device)
    if hflip:
        scale_x = torch.where(uniform(n, generator, 0, 1) < 0.5, -scale_x, scale_x)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = torch.cos(angle) * scale_x
    theta[:, 0, 1] = -torch.sin(angle)
    theta[:, 1, 0] = torch.sin(angle) * scale_x
    theta[:, 1, 1] = torch.cos(angle)
    theta[:, 0, 2] = uniform(n, generator) * 2 * shift
    theta[:, 1, 2] = uniform(n, generator) * 2 * shift
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def translate(batch: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Pad with zeros by `fraction` of each side and crop a random window of the original size:
    shifts by whole pixels, so nothing is blurred (CIFAR-10 recipes: 2 or 4 pixels of 32)."""
    n, _, height, width = batch.shape
    pad_y, pad_x = round(fraction * height), round(fraction * width)
    if not (pad_y or pad_x):
        return batch
    padded = F.pad(batch, (pad_x, pad_x, pad_y, pad_y))
    device = batch.device
    top = torch.randint(0, 2 * pad_y + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, 2 * pad_x + 1, (n,), generator=generator, device=device)
    rows = (top[:, None] + torch.arange(height, device=device))[:, None, :, None]
    columns = (left[:, None] + torch.arange(width, device=device))[:, None, None, :]
    samples = torch.arange(n, device=device)[:, None, None, None]
    channels = torch.arange(batch.shape[1], device=device)[None, :, None, None]
    return padded[samples, channels, rows, columns]


def flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Half the images mirrored left to right."""
    chosen = uniform(len(batch), generator, 0, 1) < 0.5
    return torch.where(chosen[:, None, None, None], batch.flip(-1), batch)


def color_jitter(batch: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and (in colour) saturation, each scaled by a factor from
    1 - strength to 1 + strength drawn per image."""
    n = len(batch)
    pixels = batch.float()
    factors = [1 + strength * uniform(n, generator)[:, None, None, None] for _ in range(3)]
    pixels = pixels * factors[0]
    mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
    pixels = (pixels - mean) * factors[1] + mean
    if pixels.shape[1] == 3:
        gray = pixels.mean(dim=1, keepdim=True)
        pixels = (pixels - gray) * factors[2] + gray
    return pixels.clamp(0, 255)


def erase(batch: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Random erasing: with `probability`, one rectangle of each image (2% to 33% of its area, of
    any aspect from 0.3 to 3.3) filled with one random colour, so no single part is relied on.
    One colour, not a random colour per pixel: per-pixel noise puts a hundred times the photos'
    power into the finest patterns, which a whiten block (cnncli.nn.blocks.whiten) amplifies
    most; on CIFAR-10 a conv-group net trained on it never left chance."""
    n, channels, height, width = batch.shape
    device = batch.device
    area = uniform(n, generator, *ERASED_AREA) * height * width
    aspect = torch.exp(uniform(n, generator, math.log(ERASED_ASPECT[0]), math.log(ERASED_ASPECT[1])))
    tall = (area * aspect).sqrt().clamp(1, height)
    wide = (area / aspect).sqrt().clamp(1, width)
    top = (uniform(n, generator, 0, 1) * (height - tall + 1)).floor()
    left = (uniform(n, generator, 0, 1) * (width - wide + 1)).floor()
    rows = torch.arange(height, device=device)[None, :, None]
    columns = torch.arange(width, device=device)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + tall)[:, None, None])
              & (columns >= left[:, None, None]) & (columns < (left + wide)[:, None, None]))
    chosen = uniform(n, generator, 0, 1) < probability
    mask = (inside & chosen[:, None, None])[:, None]
    colour = torch.rand(n, channels, 1, 1, generator=generator, device=device) * 255
    return torch.where(mask, colour, batch.float())


class MirrorViews(nn.Module):
    """Test-time augmentation: the scores of a picture and of its mirror image, averaged (one
    batch of twice the rows). A network trained on flipped pictures is about as sure of either;
    where it is not, the average is the better guess (docs/BENCHMARKS.md, "Photos in one command").
    With `shifts` (a network trained on shifted pictures too), also both views moved one pixel up
    and left and one down and right (edges reflected), weighted 1/2, 1/4, 1/4 as airbench scores
    CIFAR-10 (Jordan 2024): three times the cost of flip alone."""

    def __init__(self, shifts: bool = False):
        super().__init__()
        self.shifts = shifts

    def forward(self, x: torch.Tensor, head) -> torch.Tensor:
        if not self.shifts:
            return head(torch.cat([x, x.flip(-1)])).unflatten(0, (2, -1)).mean(0)
        height, width = x.shape[-2:]
        padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        views = torch.cat([x, padded[..., :height, :width], padded[..., 2:, 2:]])
        scores = head(torch.cat([views, views.flip(-1)])).unflatten(0, (6, -1))
        return 0.25 * (scores[0] + scores[3]) + 0.125 * (scores[1] + scores[2] + scores[4] + scores[5])
