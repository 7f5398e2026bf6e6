"""The `data.text` recipe section, the text `augment` keys, and the default text network."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from cnncli.modalities.text.tokenize import TOKENIZERS

MAX_LENGTH = 100_000  # tokens of one sentence
MAX_DIMENSION = 10_000  # of an embedding
MAX_ROWS = 100_000_000  # of the vocabulary or the subword table
# The usual names of a manifest's sentence column, found by name (any case) when the recipe's
# data.text_column is not there: in training and in `predict --manifest` alike.
SENTENCE_COLUMNS = ("text", "sentence", "sentences", "question", "review", "content", "body", "document", "comment",
                    "utterance", "tweet", "query", "message")


@dataclass
class TextOptions:
    """`data.text`: how a sentence becomes a matrix of token embeddings."""

    tokenizer: str = field(default="words", metadata={"choices": TOKENIZERS})
    lowercase: bool = True
    min_freq: int = 1  # tokens seen fewer times in training map to <unk>
    max_vocab: int | None = None
    # tokens: longer sentences are cropped, shorter ones padded; auto: the training sentences' 99th percentile
    max_length: Union[int, Literal["auto"]] = 64
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


# augment: auto's candidates for text: (name, word_crop, word_dropout, dropout on the embedding
# picture). "strong" is what MR and SST-2 were tuned to (their recipes); "none" is Kim's CNN-rand,
# which wins where single words decide (question types, short phrases). The first is the fallback
# when there is nothing to validate on.
REGULARISATION_GRID = (("light", 0.2, 0.1, 0.15), ("none", 0.0, 0.0, 0.0), ("strong", 0.5, 0.3, 0.3))
AUTO_LENGTH_PERCENTILE = 0.99  # max_length: auto keeps this share of training sentences whole
AUTO_LENGTH_CAP = 1024  # ... but no more tokens than this (documents, not sentences)
UNFITTED_LENGTH = 64  # what max_length: auto means before the data are read (inspecting a recipe)

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
        ("max_length", options.max_length == "auto" or 1 <= options.max_length <= MAX_LENGTH,
         f"must be from 1 to {MAX_LENGTH:,} tokens, or auto"),
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


def _kim_branch(width: int) -> list[dict]:
    """A filter width's branch, with Kim's k - 1 zero rows around the sentence."""
    return [{"conv": {"channels": 100, "kernel": [width, "full"], "padding": [width - 1, 0]}},
            {"pool": {"type": "max", "size": "global"}}]


# The general text recipe (recipes/text.yaml, and `cnncli train` on text data without a recipe):
# Kim's CNN-rand with the length taken from the data and the regularisation chosen on validation
# folds (augment: auto), five networks as a cross-validation ensemble, epochs chosen by early
# stopping. Settings chosen on MR and SST-2 folds and dev, never on their test sets
# (docs/BENCHMARKS.md); tests/test_text_transfer.py keeps recipes/text.yaml equal to it.
GENERAL_RECIPE = {
    "data": {"encoding": "auto", "split": {"test_fraction": 0.1, "val_fraction": 0.1, "seed": 0},
             "text": {"tokenizer": "words", "max_length": "auto", "embedding_dim": 128, "embeddings": "rand"}},
    "model": {"blocks": [{"dropout": 0.3}, {"parallel": [_kim_branch(width) for width in (3, 4, 5)]},
                         {"dropout": 0.5}]},
    "train": {"epochs": 12, "early_stopping": 3, "batch_size": 50, "optimizer": "adam", "lr": 0.001,
              "max_norm": 3.0, "keep": "best", "ensemble": 5, "rotate_val": True},
    "augment": "auto",
}
