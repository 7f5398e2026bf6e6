"""Random changes to batches of token ids, for training: spans of a sentence, words hidden.

A token is a word id or (subwords) a word id followed by its n-grams' ids; both forms work.
"""

from __future__ import annotations

import torch

from cnncli.modalities.text.embedding import word_ids
from cnncli.modalities.text.vocabulary import PAD_ID, UNK_ID


def crop_spans(batch: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Each row keeps a random contiguous span of its tokens, at least (1 - share) of them,
    moved to the front and padded; rows are padded at the end (as `Vocabulary.ids` makes them).
    A token may be a word id or (subwords) a word id followed by its n-grams' ids."""
    words = word_ids(batch)
    rows, width = words.shape
    lengths = (words != PAD_ID).sum(1)
    uniform = lambda: torch.rand(rows, generator=generator, device=batch.device)  # noqa: E731
    keep = (lengths - (uniform() * share * lengths).floor().long()).clamp(min=1)
    start = (uniform() * (lengths - keep + 1)).floor().long().clamp(min=0)
    positions = torch.arange(width, device=batch.device).unsqueeze(0)
    source = _per_token(batch, (start.unsqueeze(1) + positions).clamp(max=width - 1))
    return batch.gather(1, source).masked_fill(_per_token(batch, positions >= keep.unsqueeze(1)), PAD_ID)


def hide_words(batch: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Each real token becomes <unk> (with no n-grams) with probability `share`."""
    words = word_ids(batch)
    drop = (torch.rand(words.shape, generator=generator, device=batch.device) < share) & (words != PAD_ID)
    unknown = torch.zeros(batch.shape[2:], dtype=batch.dtype, device=batch.device)
    unknown.view(-1)[0] = UNK_ID
    return torch.where(_per_token(batch, drop), unknown, batch)


def _per_token(batch: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """A (rows, tokens) table, widened to every id of a token when tokens carry n-gram ids."""
    return table.unsqueeze(-1).expand_as(batch) if batch.dim() == 3 else table
