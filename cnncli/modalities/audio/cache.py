"""Computed features kept in the user's cache folder (cnncli.files.cache), so a recording is decoded and
transformed once per parameter set.

Key = sha256 of the file's bytes and of the feature parameters as JSON: a renamed or copied file
hits the cache, an edited file or a changed parameter misses it. Entries are .npy files under
CACHE/audio/ (read with allow_pickle=False, so a cache can never run code), written atomically
(cnncli.files.atomic) so a crash or a concurrent run never leaves half an entry; the folder's size cap
and pruning are cnncli.files.cache's.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from cnncli.files.atomic import write_file
from cnncli.files.cache import entry_path, note_written, touch

KIND = "audio"


class FeatureCache:
    """Get and put feature tensors by (file bytes, parameters) under the cache root `folder`;
    `folder=None` stores nothing."""

    def __init__(self, folder: Path | None, params_json: str):
        self.folder = folder
        self.params = params_json.encode()
        self.write_errors: list[str] = []  # the cache only saves time: failing to write is a warning

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def key(self, content: bytes) -> str:
        hasher = hashlib.sha256(content)
        hasher.update(b"\0")
        hasher.update(self.params)
        return hasher.hexdigest()

    def path(self, key: str) -> Path:
        return entry_path(self.folder, KIND, key, ".npy")

    def get(self, key: str) -> torch.Tensor | None:
        if self.folder is None:
            return None
        path = self.path(key)
        try:
            array = np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError, EOFError):
            # A missing entry is a miss; an unreadable one too: it is recomputed and overwritten.
            return None
        touch(path)
        return torch.from_numpy(array)

    def put(self, key: str, tensor: torch.Tensor) -> None:
        if self.folder is None:
            return
        target = self.path(key)
        buffer = io.BytesIO()
        np.save(buffer, tensor.detach().cpu().numpy(), allow_pickle=False)
        try:
            write_file(target, buffer.getvalue(), durable=False)  # a lost entry is only recomputed
            note_written(self.folder, buffer.tell())
        except OSError as error:
            self.write_errors.append(f"{target}: {error.strerror}")
