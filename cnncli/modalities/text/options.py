"""The `data.text` recipe section, the text `augment` keys, and the default text network."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cnncli.modalities.text.tokenize import TOKENIZERS

MAX_LENGTH = 100_000  # tokens of one sentence
MAX_DIMENSION = 10_000  # of an embedding
MAX_ROWS = 100_000_000  # of the vocabulary or the subword table


@dataclass
class TextOptions:
    """`data.text`: how a sentence becomes a matrix of token embeddings."""

    tokenizer: str = field(default="words", metadata={"choices": TOKENIZERS})
    lowercase: bool = True
    min_freq: int = 1  # tokens seen fewer times in training map to <unk>
    max_vocab: int | None = None
    max_length: int = 64  # tokens: longer sentences are cropped, shorter ones padded
    embedding_dim: int = 300
    embeddings: Literal["rand", "static", "non-static", "multichannel"] = "rand"
    vectors: str | None = None  # word2vec (.txt/.bin) or GloVe file; needed unless embeddings=rand
    subword_buckets: int = 0  # > 0: learned vectors also average the character n-grams, hashed to this many rows
    subword_sizes: list[int] = field(default_factory=lambda: [3, 5])  # [shortest, longest] n-gram


@dataclass
class TextAugment:
    """The `augment` keys of text."""

    word_dropout: float = 0.0  # share of tokens replaced by <unk>
    word_crop: float = 0.0  # up to this share of a sentence's tokens is cut off (a random span is kept)


# Kim (2014): filters of widths 3, 4 and 5 spanning the embedding, max over time.
KIM_CNN = [
    {"parallel": [[{"conv": {"channels": 100, "kernel": [width, "full"]}},
                   {"pool": {"type": "max", "size": "global"}}] for width in (3, 4, 5)]},
    {"dropout": 0.5},
]


def option_problems(options: TextOptions) -> list[tuple[str, str]]:
    """(key, what is wrong) for each `data.text` value out of its range."""
    low_high = options.subword_sizes
    checks = [
        ("max_length", 1 <= options.max_length <= MAX_LENGTH, f"must be from 1 to {MAX_LENGTH:,} tokens"),
        ("min_freq", options.min_freq >= 1, "must be at least 1"),
        ("max_vocab", options.max_vocab is None or 3 <= options.max_vocab <= MAX_ROWS,
         f"must be from 3 to {MAX_ROWS:,} (or null: every token)"),
        ("embedding_dim", 1 <= options.embedding_dim <= MAX_DIMENSION, f"must be from 1 to {MAX_DIMENSION:,}"),
        ("vectors", options.embeddings == "rand" or options.vectors,
         f"is required when data.text.embeddings is {options.embeddings}"),
        ("subword_buckets", 0 <= options.subword_buckets <= MAX_ROWS, f"must be from 0 (off) to {MAX_ROWS:,}"),
        ("subword_buckets", options.embeddings != "static" or not options.subword_buckets,
         "needs learned embeddings (rand, non-static or multichannel), not static"),
        ("subword_sizes", len(low_high) == 2 and 1 <= low_high[0] <= low_high[1] <= 32,
         "must be [shortest, longest], from 1 to 32"),
    ]
    return [(key, message) for key, ok, message in checks if not ok]


def augment_problems(augment: TextAugment) -> list[tuple[str, str]]:
    """(key, what is wrong) for each text `augment` value out of its range."""
    checks = [("word_dropout", 0 <= augment.word_dropout < 1, "must be a share in [0, 1)"),
              ("word_crop", 0 <= augment.word_crop < 1, "must be a share in [0, 1)")]
    return [(key, message) for key, ok, message in checks if not ok]
