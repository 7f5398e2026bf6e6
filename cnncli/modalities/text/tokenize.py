"""Sentences -> tokens, the way Kim (2014) cleaned them, or by whitespace, or by character.

TOKENIZERS is the one list of their names (the recipe's `data.text.tokenizer` is checked
against it). `words` is Kim's `clean_str` (CNN_sentence/process_data.py), kept Unicode-aware so Latin-1
reviews keep their accented letters: everything but letters, digits and ( ) , ! ? ' ` becomes
a space, punctuation becomes its own token, and the English contractions 's 've n't 're 'd 'll
are split off their word ("don't" -> "do n't"), as the MR and SST files already are.
"""

from __future__ import annotations

import re

from cnncli.registry import Registry

TOKENIZERS = Registry("tokenizer", "data.text.tokenizer")

_DROPPED = re.compile(r"[^\w(),!?'`]|_")
_CONTRACTIONS = re.compile(r"(n't|'s|'ve|'re|'d|'ll)\b")
_PUNCTUATION = re.compile(r"([(),!?])")


def tokenize(text: str, tokenizer: str = "words", lowercase: bool = True) -> list[str]:
    """The tokens of one sentence under the named scheme (see TOKENIZERS)."""
    return TOKENIZERS.get(tokenizer)(text.lower() if lowercase else text)


@TOKENIZERS.register("words")
def clean_words(text: str) -> list[str]:
    """Kim's clean_str: words, punctuation and contractions as separate tokens."""
    text = _DROPPED.sub(" ", text)
    text = _CONTRACTIONS.sub(r" \1", text)
    text = _PUNCTUATION.sub(r" \1 ", text)
    return text.split()


@TOKENIZERS.register("whitespace")
def whitespace(text: str) -> list[str]:
    return text.split()


@TOKENIZERS.register("chars")
def characters(text: str) -> list[str]:
    """Runs of whitespace become one space token, so word boundaries stay visible."""
    return list(" ".join(text.split()))
