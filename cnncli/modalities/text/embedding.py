"""The text stem: token ids -> the (N, C, tokens, dimensions) picture of their embeddings.

Its weights travel in the bundle's safetensors with the rest of the network; a bundle never
needs the vectors file it may have started from.
"""

from __future__ import annotations

import torch
from torch import nn

from cnncli.modalities.text.vectors import UNKNOWN_RANGE
from cnncli.modalities.text.vocabulary import PAD_ID


class TokenEmbedding(nn.Module):
    """int64 token ids (N, L) -> float (N, C, L, E): C = 2 for multichannel (static, tuned), else 1.
    With subwords the ids are (N, L, 1 + n-grams), and the learned table averages each token's rows.

    In training, a batch is cut to its longest sentence plus `padding_margin` rows when the
    backbone gives the same result that way (set by `TextModality.adapt_stem`; Kim's CNN needs
    as many rows as its widest filter). SST's sentences average 19 of 56 tokens, so this skips
    much of the convolution work. Evaluation and prediction keep the full height."""

    padding_margin: int | None = None

    def __init__(self, vocabulary_size: int, dimension: int, mode: str, pretrained: torch.Tensor | None = None,
                 subword_buckets: int = 0):
        super().__init__()
        self.mode = mode
        self.subword_buckets = subword_buckets
        initial = pretrained if pretrained is not None else random_embeddings(vocabulary_size, dimension)
        self.static = None
        self.tuned = None
        if mode in ("static", "multichannel"):
            self.static = nn.Embedding.from_pretrained(initial.clone(), freeze=True, padding_idx=PAD_ID)
        if mode in ("rand", "non-static", "multichannel") and subword_buckets:
            # ids (N, L, 1 + n-grams): a token's vector is the mean of its word's and its n-grams' rows.
            rows = torch.cat([initial, random_embeddings(subword_buckets, dimension, padding=False)])
            self.tuned = nn.EmbeddingBag.from_pretrained(rows, freeze=False, mode="mean", padding_idx=PAD_ID)
        elif mode in ("rand", "non-static", "multichannel"):
            self.tuned = nn.Embedding.from_pretrained(initial.clone(), freeze=False, padding_idx=PAD_ID)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        words = word_ids(ids)
        if self.training and self.padding_margin is not None:
            keep = min(ids.shape[1], longest_row(words) + self.padding_margin)
            ids, words = ids[:, :keep], words[:, :keep]
        channels = []
        if self.static is not None:
            channels.append(self.static(words))
        if isinstance(self.tuned, nn.EmbeddingBag):
            channels.append(self.tuned(ids.reshape(-1, ids.shape[-1])).view(*ids.shape[:2], -1))
        elif self.tuned is not None:
            channels.append(self.tuned(words))
        return torch.stack(channels, dim=1)

    def fused_with(self, backbone: nn.Module) -> nn.Module | None:
        """This stem and `backbone` as one faster module for prediction, when the backbone is
        Kim's branches as cnncli.nn.inference leaves them (cnncli.modalities.text.packed)."""
        from cnncli.modalities.text.packed import packed_sentences

        return packed_sentences(self, backbone)

    def extra_repr(self) -> str:
        table = self.static if self.static is not None else self.tuned
        subwords = f" + {self.subword_buckets} subword rows" if self.subword_buckets else ""
        return f"{self.mode}, {table.num_embeddings} rows{subwords} x {table.embedding_dim} dims"


def word_ids(batch: torch.Tensor) -> torch.Tensor:
    """The (rows, tokens) word ids of a batch whose tokens may also carry n-gram ids (subwords)."""
    return batch[..., 0] if batch.dim() == 3 else batch


def longest_row(ids: torch.Tensor) -> int:
    """1 + the last position holding a token (not padding) in any row."""
    positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
    return int(((ids != PAD_ID) * positions).amax()) if ids.numel() else 0


def random_embeddings(count: int, dimension: int, padding: bool = True) -> torch.Tensor:
    """Kim's initialisation for words without a vector: U(-0.25, 0.25); the padding row is zero."""
    table = (torch.rand(count, dimension) * 2 - 1) * UNKNOWN_RANGE
    if padding:
        table[PAD_ID] = 0
    return table
