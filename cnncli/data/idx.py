"""MNIST's idx files: N images of H x W with their labels file beside them."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import torch

from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.files.reading import read_limited
from cnncli.limits import MAX_IDX_BYTES


def read_idx(images_path: Path) -> list[Sample]:
    """MNIST-format images with their labels file (found by name); contents are uint8 tensors."""
    images = read_idx_array(images_path)
    labels_path = images_path.with_name(images_path.name.replace("images-idx3", "labels-idx1"))
    if labels_path == images_path or not labels_path.exists():
        raise CnncliError(f"{images_path}: no labels file beside it (expected {labels_path.name})")
    labels = read_idx_array(labels_path)
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise CnncliError(f"{images_path}: expected N images of H x W and N labels, "
                          f"got {tuple(images.shape)} and {tuple(labels.shape)}")
    return [Sample(f"{images_path}#{i}", str(int(labels[i])), images[i], i) for i in range(len(images))]


_IDX_TYPES = {0x08: ("uint8", 1), 0x09: ("int8", 1), 0x0B: (">i2", 2), 0x0C: (">i4", 4),
              0x0D: (">f4", 4), 0x0E: (">f8", 8)}


def read_idx_array(path: Path):
    """An idx file (optionally gzipped) as a torch tensor."""
    raw = read_limited(path, MAX_IDX_BYTES, "idx file")
    if path.suffix == ".gz":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as handle:
                raw = handle.read(MAX_IDX_BYTES + 1)
        except (OSError, EOFError) as error:
            raise CnncliError(f"{path}: cannot read idx file ({error})") from None
        if len(raw) > MAX_IDX_BYTES:
            raise CnncliError(f"{path}: larger than {MAX_IDX_BYTES:,} bytes once decompressed; not an idx file")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise CnncliError(f"{path}: not an idx file (bad magic number)")
    dtype, size = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    count = 1
    for dim in shape:
        count *= dim
    body = raw[4 + 4 * ndim:]
    if len(body) != count * size:
        raise CnncliError(f"{path}: truncated idx file ({len(body)} bytes of data, header says {count * size})")
    array = np.frombuffer(body, dtype=dtype).reshape(shape)
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("=")).copy())
