"""Character n-grams of a token, hashed into a fixed number of embedding rows (fastText's subwords).

With them a word the training data never showed still has a vector: the mean of its n-grams',
learned from the words that share them ("overshadowed" from "overshadow", "shadows", ...). The
hash is CRC-32 of the n-gram's UTF-8 bytes, the same on every machine and run, so a bundle needs
only the bucket count and n-gram sizes to rebuild every id.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

MAX_PER_TOKEN = 24  # n-grams kept per token (the shortest sizes first); a 10-letter word has 27 of sizes 3-5


def char_ngrams(token: str, sizes: Sequence[int]) -> list[str]:
    """The n-grams of `<token>` (the brackets mark its ends), shortest sizes first."""
    marked = f"<{token}>"
    low, high = sizes
    return [marked[start:start + n] for n in range(low, high + 1) for start in range(len(marked) - n + 1)]


def subword_ids(token: str, sizes: Sequence[int], buckets: int, first_id: int) -> list[int]:
    """Embedding rows of the token's n-grams: first_id + CRC-32(n-gram) mod buckets."""
    grams = char_ngrams(token, sizes)[:MAX_PER_TOKEN]
    return [first_id + zlib.crc32(gram.encode("utf-8")) % buckets for gram in grams]
