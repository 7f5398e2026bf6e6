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


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch) -> Path:
    """The cache folder of every test run: never the user's own (~/.cache/cnncli)."""
    folder = tmp_path_factory.getbasetemp() / "user-cache"
    monkeypatch.setenv("CNNCLI_CACHE_DIR", str(folder))
    return folder


def write_two_class_images(root: Path, labels=("left", "right"), count: int = 8, size: int = 8) -> Path:
    """Class folders of small PNGs a CNN can tell apart: bright left half vs bright right half."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    for label, side in zip(labels, (slice(0, size // 2), slice(size // 2, size))):
        folder = root / label
        folder.mkdir(parents=True)
        for index in range(count):
            pixels = generator.integers(0, 60, size=(size, size)).astype("uint8")
            pixels[:, side] += 150
            Image.fromarray(pixels).save(folder / f"{index:02d}.png")
    return root


def tiny_image_recipe(root: Path, **train) -> dict:
    """A recipe that trains in a second on `write_two_class_images` data."""
    return {"data": {"modality": "image", "root": str(root), "image": {"size": [8, 8]},
                     "split": {"test_fraction": 0.25, "val_fraction": 0.2}},
            "model": {"blocks": [{"conv": {"channels": 4, "kernel": 3}}, {"pool": {"type": "max", "size": "global"}}]},
            "train": {"epochs": 1, "batch_size": 4, "threads": 1, **train}}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A complete image bundle trained for one epoch on 8x8 PNGs of two classes (left, right)."""
    from cnncli.recipe.config import load_config
    from cnncli.training.train import train

    root = tmp_path_factory.mktemp("tiny")
    images = write_two_class_images(root / "images")
    train(load_config(tiny_image_recipe(images)), root / "bundle", cache=None)
    return root / "bundle"
