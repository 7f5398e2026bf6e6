"""Sentences as pictures: one row per token, one column per embedding dimension (Kim, 2014).

A sentence is tokenised (cnncli.tokenize), mapped to ids by a vocabulary fitted on the training
split (cnncli.vocabulary) and padded or cropped to `max_length`; those int64 ids are the encoded
sample. The stem is the embedding table, so the (N, C, tokens, dimensions) picture is made on the
fly and its weights travel in the bundle's safetensors with the rest of the network. Embeddings
are learned from scratch (`rand`) or start from a user's vectors file, read once at training
time: frozen (`static`), fine-tuned (`non-static`), or both as two channels (`multichannel`).
With `subword_buckets`, each token also carries its character n-grams' ids (cnncli.subwords), and
its learned vector is the mean of its word's and n-grams' rows, so unseen words are not all <unk>.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnncli.config import AugmentConfig, Config, TextOptions
from cnncli.data.sample import Sample
from cnncli.data.sources import list_files, read_lines
from cnncli.errors import CnncliError
from cnncli.modalities.base import Modality
from cnncli.tokenize import tokenize
from cnncli.vocabulary import PAD_ID, UNK_ID, Vocabulary

TEXT_EXTENSIONS = (".txt",)


class TokenEmbedding(nn.Module):
    """int64 token ids (N, L) -> float (N, C, L, E): C = 2 for multichannel (static, tuned), else 1.
    With subwords the ids are (N, L, 1 + n-grams), and the learned table averages each token's rows.

    In training, a batch is cut to its longest sentence plus `padding_margin` rows when the
    backbone gives the same result that way (set by `cnncli.model.build_network`; Kim's CNN needs
    as many rows as its widest filter). SST's sentences average 19 of 56 tokens, so this skips
    much of the convolution work. Evaluation and prediction keep the full height."""

    input_dtype = torch.long
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
    from cnncli.word_vectors import UNKNOWN_RANGE

    table = (torch.rand(count, dimension) * 2 - 1) * UNKNOWN_RANGE
    if padding:
        table[PAD_ID] = 0
    return table


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


class TextModality(Modality):
    name = "text"
    extensions = TEXT_EXTENSIONS
    augment_keys = ("word_dropout", "word_crop")

    def __init__(self, options: TextOptions, encoding: str = "utf-8", augment: AugmentConfig | None = None,
                 vocabulary: Vocabulary | None = None):
        self.options = options
        self.encoding = encoding  # for samples that are files (folder-per-class, predict on a .txt)
        self.augment_config = augment or AugmentConfig()
        self.vocabulary = vocabulary
        self.pretrained: torch.Tensor | None = None  # read from options.vectors by fit; never stored
        self.vectors_found = 0  # how many vocabulary tokens the vectors file covered
        self.stem: TokenEmbedding | None = None  # the last stem built, so `draw` can show its embeddings
        self._subword_cache: dict[str, list[int]] = {}

    @classmethod
    def from_config(cls, config: Config) -> "TextModality":
        return cls(dataclasses.replace(config.data.text), config.data.encoding, config.augment)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TextModality":
        return cls(TextOptions(**state["options"]), state["encoding"], None,
                   Vocabulary.from_state(state["vocabulary"]))

    def state_dict(self) -> dict[str, Any]:
        return {"options": dataclasses.asdict(self.options), "encoding": self.encoding,
                "vocabulary": self.require_vocabulary().state_dict()}

    # -- fitting and encoding --------------------------------------------------------------------

    def fit(self, samples: Sequence[Sample]) -> None:
        """Learn the vocabulary from the training samples; read pretrained vectors if the recipe names them."""
        options = self.options
        self._subword_cache.clear()  # n-gram ids start after the vocabulary's rows
        self.vocabulary = Vocabulary.fit(self._readable_tokens(samples), options.min_freq, options.max_vocab)
        if options.embeddings != "rand":
            from cnncli.word_vectors import load_vectors

            if not options.vectors:
                raise CnncliError(f"data.text.vectors: required when data.text.embeddings is {options.embeddings}")
            self.pretrained, found = load_vectors(options.vectors, self.vocabulary, options.embedding_dim)
            if found == 0:
                raise CnncliError(f"data.text.vectors: {options.vectors} has a vector for none of the "
                                  f"{len(self.vocabulary) - 2} training tokens; is it the right file?")
            self.vectors_found = found

    def _readable_tokens(self, samples: Sequence[Sample]) -> Iterator[list[str]]:
        # An unreadable file is left out here; encoding reports it as a skipped sample.
        for sample in samples:
            try:
                yield self.tokens(sample)
            except CnncliError:
                continue

    def tokens(self, sample: Sample) -> list[str]:
        return tokenize(self.text_of(sample), self.options.tokenizer, self.options.lowercase)

    def text_of(self, sample: Sample) -> str:
        """The sample's sentence, or the whole text of its file (folder-per-class data)."""
        if isinstance(sample.content, str):
            return sample.content
        path = Path(sample.locator)
        if not path.is_file():
            raise CnncliError(f"{sample.locator}: no such file")
        return " ".join(read_lines(path, self.encoding))

    def encode(self, sample: Sample) -> torch.Tensor:
        """(max_length,) word ids; with subwords (max_length, 1 + MAX_PER_TOKEN): each word id, then
        its n-grams' ids."""
        vocabulary, length = self.require_vocabulary(), self.options.max_length
        tokens = self.tokens(sample)
        ids = vocabulary.ids(tokens, length)
        if not self.options.subword_buckets:
            return torch.tensor(ids, dtype=torch.long)
        width = self.input_shape[1]
        grams = [self._subword_ids(token) for token in tokens[:length]]
        grams += [[]] * (length - len(grams))
        rows = [[word, *row, *[PAD_ID] * (width - 1 - len(row))] for word, row in zip(ids, grams)]
        return torch.tensor(rows, dtype=torch.long)

    def _subword_ids(self, token: str) -> list[int]:
        from cnncli.subwords import subword_ids

        if token not in self._subword_cache:
            self._subword_cache[token] = subword_ids(token, self.options.subword_sizes, self.options.subword_buckets,
                                                     first_id=len(self.require_vocabulary()))
        return self._subword_cache[token]

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.options.subword_buckets:
            from cnncli.subwords import MAX_PER_TOKEN

            return (self.options.max_length, 1 + MAX_PER_TOKEN)
        return (self.options.max_length,)

    def require_vocabulary(self) -> Vocabulary:
        if self.vocabulary is None:
            raise RuntimeError("TextModality.fit must run before encoding")  # a bug, not a user error
        return self.vocabulary

    # -- network ---------------------------------------------------------------------------------

    @property
    def channels(self) -> int:
        return 2 if self.options.embeddings == "multichannel" else 1

    def build_stem(self) -> nn.Module:
        # Unfitted (inspecting a recipe whose data cannot be read): a table of max_vocab rows, or none.
        size = len(self.vocabulary) if self.vocabulary is not None else (self.options.max_vocab or 2)
        self.stem = TokenEmbedding(size, self.options.embedding_dim, self.options.embeddings, self.pretrained,
                                   self.options.subword_buckets)
        return self.stem

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Word crop, then word dropout: sentences are seen as their random spans (like the labelled
        phrases SST was built from), and some real tokens become <unk>, so no single word is relied on."""
        if self.augment_config.word_crop:
            batch = crop_spans(batch, self.augment_config.word_crop, generator)
        if self.augment_config.word_dropout:
            batch = hide_words(batch, self.augment_config.word_dropout, generator)
        return batch

    def describe(self) -> str:
        options = self.options
        vocabulary = len(self.vocabulary) if self.vocabulary is not None else "?"
        source = f" from {Path(options.vectors).name}" if options.vectors and options.embeddings != "rand" else ""
        low, high = options.subword_sizes
        subwords = (f", with character {low}-{high}-grams in {options.subword_buckets} rows"
                    if options.subword_buckets else "")
        return (f"text {self.channels}x{options.max_length}x{options.embedding_dim}: {options.max_length} tokens "
                f"({options.tokenizer} tokenizer, vocabulary {vocabulary}) x {options.embedding_dim}-dim "
                f"{options.embeddings} embeddings{source}{subwords}")

    # -- predict and inspect ---------------------------------------------------------------------

    def expand_inputs(self, arguments: Iterable[str]) -> Iterator[Sample]:
        """Each argument is a sentence, a text file (one sentence per line), a folder of .txt files
        (one sample per file), or '-' (one sentence per line of stdin)."""
        for argument in arguments:
            path = Path(argument)
            if argument == "-":
                for number, line in enumerate(sys.stdin, start=1):
                    if line.strip():
                        yield Sample(f"<stdin>:{number}", content=line.strip(), position=number - 1)
            elif path.is_dir():
                yield from (Sample(str(file)) for file in list_files(path, self.extensions))
            elif path.is_file():
                try:
                    lines = read_lines(path, self.encoding)
                except CnncliError:
                    yield Sample(str(path))  # encoding it reports the same error as this input's row
                    continue
                yield from (Sample(f"{path}:{n + 1}", content=line, position=n) for n, line in enumerate(lines))
            else:
                yield Sample(argument, content=argument)

    def explain(self, network: nn.Module, sample: Sample) -> list[dict]:
        """Rows for inspect: each token's gradient x input saliency for the predicted class."""
        from cnncli.text_saliency import token_saliency

        known = self.require_vocabulary().index
        return [{"position": position, "token": token, "saliency": round(score, 6), "known": token in known}
                for position, (token, score) in enumerate(token_saliency(network, self, sample))]

    def draw(self, sample: Sample, path: Path, network: nn.Module | None = None) -> None:
        """The sentence as the network sees it (its embedding matrix), with token saliency when
        `network` is given."""
        from cnncli.text_saliency import draw_tokens

        draw_tokens(self, sample, Path(path), network)
