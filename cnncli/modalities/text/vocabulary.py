"""Tokens <-> integer ids, learned from the training split only and stored in the bundle as a list.

Id 0 is padding and id 1 stands for every token not in the vocabulary, so a bundle's
vocabulary is just its token list: readable in model.json, and the same ids at prediction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


class Vocabulary:
    """An ordered token list; a token's id is its position."""

    def __init__(self, tokens: Sequence[str] = (PAD, UNK)):
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD} and {UNK}")  # only our own code builds these
        self.tokens = list(tokens)
        self.index = {token: position for position, token in enumerate(self.tokens)}

    @classmethod
    def fit(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_vocab: int | None = None) -> "Vocabulary":
        """Tokens seen at least `min_freq` times, most frequent first (ties in first-seen order).

        `max_vocab` counts the two special tokens.
        """
        counts: Counter[str] = Counter()
        for tokens in sentences:
            counts.update(tokens)
        kept = [token for token, count in counts.most_common() if count >= min_freq and token not in (PAD, UNK)]
        if max_vocab is not None:
            kept = kept[:max(max_vocab - 2, 0)]
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, tokens: Sequence[str], length: int) -> list[int]:
        """Ids of the first `length` tokens, padded with PAD_ID to exactly `length`."""
        found = [self.index.get(token, UNK_ID) for token in tokens[:length]]
        return found + [PAD_ID] * (length - len(found))

    def state_dict(self) -> list[str]:
        return list(self.tokens)

    @classmethod
    def from_state(cls, tokens: Sequence[str]) -> "Vocabulary":
        return cls(tokens)
