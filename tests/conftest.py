"""Shared fixtures: small real files written by the tests, and paths to the bundled samples."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_IMAGES = REPO / "sample_data" / "images"
SHARED_DATA = REPO.parent / "shared" / "data"


def write_idx(path: Path, array, compress: bool = True) -> Path:
    """Write a uint8 numpy array in MNIST's idx format."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype("uint8").tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture
def tiny_image_folder(tmp_path: Path) -> Path:
    """Two classes of 8x8 PNGs that a CNN can tell apart: bright left half vs bright right half."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    for label, side in (("left", slice(0, 4)), ("right", slice(4, 8))):
        folder = tmp_path / "images" / label
        folder.mkdir(parents=True)
        for index in range(12):
            pixels = generator.integers(0, 60, size=(8, 8)).astype("uint8")
            pixels[:, side] += 150
            Image.fromarray(pixels).save(folder / f"{label}{index:02d}.png")
    return tmp_path / "images"
