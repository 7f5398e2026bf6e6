"""Sentences as pictures: one row per token, one column per embedding dimension (Kim, 2014).

A sentence is tokenised (`tokenize`), mapped to ids by a vocabulary fitted on the training
split (`vocabulary`) and padded or cropped to `max_length`; those int64 ids are the encoded
sample. The stem is the embedding table, so the (N, C, tokens, dimensions) picture is made on the
fly and its weights travel in the bundle's safetensors with the rest of the network. Embeddings
are learned from scratch (`rand`) or start from a user's vectors file, read once at training
time: frozen (`static`), fine-tuned (`non-static`), or both as two channels (`multichannel`).
With `subword_buckets`, each token also carries its character n-grams' ids (`subwords`), and
its learned vector is the mean of its word's and n-grams' rows, so unseen words are not all <unk>.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnncli.data.sample import Sample
from cnncli.data.sources import ENCODING_HINT, list_files, read_lines
from cnncli.errors import CnncliError
from cnncli.files.atomic import write_file
from cnncli.files.reading import is_text_encoding
from cnncli.modalities.base import Modality
from cnncli.modalities.text.augment import crop_spans, hide_words
from cnncli.modalities.text.drawing import tokens_png, words_thumbnail
from cnncli.modalities.text.embedding import TokenEmbedding, word_ids
from cnncli.modalities.text.options import (
    AUTO_LENGTH_CAP,
    AUTO_LENGTH_PERCENTILE,
    GENERAL_RECIPE,
    KIM_CNN,
    REGULARISATION_GRID,
    SENTENCE_COLUMNS,
    UNFITTED_LENGTH,
    TextAugment,
    TextOptions,
    augment_problems,
    option_problems,
)
from cnncli.modalities.text.saliency import token_saliency
from cnncli.modalities.text.subwords import MAX_PER_TOKEN, subword_ids
from cnncli.modalities.text.tokenize import tokenize
from cnncli.modalities.text.vectors import load_vectors
from cnncli.modalities.text.vocabulary import PAD_ID, UNK_ID, Vocabulary
from cnncli.nn.model import padding_margin

TEXT_EXTENSIONS = (".txt",)


class TextModality(Modality):
    name = "text"
    extensions = TEXT_EXTENSIONS
    options_type = TextOptions
    augment_type = TextAugment
    text_samples = True
    content_columns = SENTENCE_COLUMNS
    can_stream = False  # sentences are in memory already, and their ids take less room than their text
    default_blocks = KIM_CNN
    default_recipe = GENERAL_RECIPE
    thumbnail_aspect = 2.6

    def __init__(self, options: TextOptions, encoding: str = "utf-8", augment: TextAugment | None = None,
                 vocabulary: Vocabulary | None = None):
        self.options = options
        self.encoding = encoding  # for samples that are files (folder-per-class, predict on a .txt)
        self.encoding_hint = ENCODING_HINT  # what to do about a file in another encoding
        self.augment_config = augment or TextAugment()
        self.vocabulary = vocabulary
        self.pretrained: torch.Tensor | None = None  # read from options.vectors by fit; never stored
        self.vectors_found = 0  # how many vocabulary tokens the vectors file covered
        self.stem: TokenEmbedding | None = None  # the last stem built, so `draw` can show its embeddings
        self.padding_margin: int | None = None  # rows past the longest sentence the backbone needs (adapt_stem)
        self._subword_cache: dict[str, list[int]] = {}
        self.fit_notes: list[str] = []  # what fitting chose from the data (max_length: auto)

    @classmethod
    def from_config(cls, config: Any) -> "TextModality":
        return cls(cls.options_from(config), config.data.encoding, cls.augment_from(config))

    @classmethod
    def check_options(cls, options: TextOptions) -> list[tuple[str, str]]:
        return option_problems(options)

    @classmethod
    def check_augment(cls, augment: Any) -> list[tuple[str, str]]:
        return augment_problems(augment)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TextModality":
        tokens = state["vocabulary"]
        if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens) or \
                len(set(tokens)) != len(tokens) or tokens[:2] != ["<pad>", "<unk>"]:
            raise CnncliError("modality.state.vocabulary: expected distinct tokens starting with <pad>, <unk>")
        encoding = state["encoding"]
        if not isinstance(encoding, str) or not (encoding == "auto" or is_text_encoding(encoding)):
            raise CnncliError(f"modality.state.encoding: unknown text encoding {encoding!r}")
        modality = cls(TextOptions(**state["options"]), encoding, None, Vocabulary.from_state(tokens))
        modality.encoding_hint = f"this bundle reads {encoding} (its data.encoding): convert the file to {encoding}"
        return modality

    def state_dict(self) -> dict[str, Any]:
        return {"options": dataclasses.asdict(self.options), "encoding": self.encoding,
                "vocabulary": self.require_vocabulary().state_dict()}

    # -- fitting and encoding --------------------------------------------------------------------

    def fit(self, samples: Sequence[Sample]) -> None:
        """Learn the vocabulary from the training samples; read pretrained vectors if the recipe names them."""
        options = self.options
        self._subword_cache.clear()  # n-gram ids start after the vocabulary's rows
        sentences = list(self._readable_tokens(samples))
        self.vocabulary = Vocabulary.fit(sentences, options.min_freq, options.max_vocab)
        if options.max_length == "auto":
            self.options = options = dataclasses.replace(options, max_length=length_from_data(sentences))
            self.fit_notes = [f"data.text.max_length auto: {options.max_length} tokens (the "
                              f"{AUTO_LENGTH_PERCENTILE * 100:.0f}th percentile of {len(sentences):,} training samples)"]
        if options.embeddings != "rand":

            if not options.vectors:
                raise CnncliError(f"data.text.vectors: required when data.text.embeddings is {options.embeddings}")
            self.pretrained, found = load_vectors(options.vectors, self.vocabulary, options.embedding_dim)
            if found == 0:
                raise CnncliError(f"data.text.vectors: {options.vectors} has a vector for none of the "
                                  f"{len(self.vocabulary) - 2} training tokens; is it the right file?")
            self.vectors_found = found

    def fitted_notes(self) -> list[str]:
        return list(self.fit_notes)

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
        """The sample's sentence, or the whole text of its file (folder-per-class data); an empty
        one is an error, not a sentence of padding."""
        if isinstance(sample.content, str):
            text = sample.content
        else:
            path = Path(sample.locator)
            if not path.is_file():
                raise CnncliError(f"{sample.locator}: no such file")
            text = " ".join(read_lines(path, self.encoding, self.encoding_hint))
        if not text.strip():
            raise CnncliError(f"{sample.locator}: holds no text")
        return text

    def encode(self, sample: Sample) -> torch.Tensor:
        """(max_length,) word ids; with subwords (max_length, 1 + MAX_PER_TOKEN): each word id, then
        its n-grams' ids."""
        return self.stack_rows([self.encode_row(sample)])[0]

    def encode_row(self, sample: Sample) -> list:
        """encode's ids as lists: a batch of sentences becomes one tensor at once (a tensor per
        sentence was a fifth of the encoding's time)."""
        vocabulary, length = self.require_vocabulary(), self.length
        tokens = self.tokens(sample)
        ids = vocabulary.ids(tokens, length)
        if not self.options.subword_buckets:
            return ids
        width = self.input_shape[1]
        grams = [self._subword_ids(token) for token in tokens[:length]]
        grams += [[]] * (length - len(grams))
        return [[word, *row, *[PAD_ID] * (width - 1 - len(row))] for word, row in zip(ids, grams)]

    def stack_rows(self, rows: list) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.long)

    def _subword_ids(self, token: str) -> list[int]:
        if token not in self._subword_cache:
            self._subword_cache[token] = subword_ids(token, self.options.subword_sizes, self.options.subword_buckets,
                                                     first_id=len(self.require_vocabulary()))
        return self._subword_cache[token]

    @property
    def shape_from_recipe(self) -> bool:
        return True  # the vocabulary is counted at its max_vocab until fitted

    @property
    def length(self) -> int:
        """Tokens per encoded sample (max_length, or a stand-in while `auto` awaits the data)."""
        return UNFITTED_LENGTH if self.options.max_length == "auto" else self.options.max_length

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.options.subword_buckets:
            return (self.length, 1 + MAX_PER_TOKEN)
        return (self.length,)

    def require_vocabulary(self) -> Vocabulary:
        if self.vocabulary is None:
            raise RuntimeError("TextModality.fit must run before encoding")  # a bug, not a user error
        return self.vocabulary

    # -- network ---------------------------------------------------------------------------------

    @property
    def channels(self) -> int:
        return 2 if self.options.embeddings == "multichannel" else 1

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.long

    def build_stem(self) -> nn.Module:
        # Unfitted (inspecting a recipe whose data cannot be read): a table of max_vocab rows, or none.
        size = len(self.vocabulary) if self.vocabulary is not None else (self.options.max_vocab or 2)
        self.stem = TokenEmbedding(size, self.options.embedding_dim, self.options.embeddings, self.pretrained,
                                   self.options.subword_buckets)
        return self.stem

    def stem_size(self) -> tuple[tuple[int, ...], int]:
        """The embedding tables' size without building them (a large vocabulary x dimension)."""
        options = self.options
        rows = len(self.vocabulary) if self.vocabulary is not None else (options.max_vocab or 2)
        tables = {"static": 1, "non-static": 1, "rand": 1, "multichannel": 2}[options.embeddings]
        learned = options.subword_buckets if options.embeddings != "static" else 0
        return (self.channels, self.length, options.embedding_dim), \
            (rows * tables + learned) * options.embedding_dim

    def adapt_stem(self, stem: nn.Module, backbone: nn.Module) -> bool:
        """Training batches keep only the padding rows the backbone needs (see TokenEmbedding)."""
        stem.padding_margin = self.padding_margin = padding_margin(backbone)
        return stem.padding_margin is not None

    def inference_batches(self, encoded: torch.Tensor,
                          batch_size: int) -> Iterator[tuple[slice | torch.Tensor, torch.Tensor]]:
        """Sentences sorted by length, each batch cut to its longest sentence plus the padding
        rows the backbone needs (as in training): the same outputs for about half the work."""
        if self.padding_margin is None or len(encoded) == 0:
            yield from super().inference_batches(encoded, batch_size)
            return
        words = word_ids(encoded)
        positions = torch.arange(1, words.shape[1] + 1)
        lengths = ((words != PAD_ID) * positions).amax(dim=1)  # 1 + the last token's position
        order = lengths.argsort(stable=True)
        for rows in order.split(batch_size):
            keep = min(words.shape[1], int(lengths[rows].max()) + self.padding_margin)
            yield rows, encoded[rows, :keep]

    def regularisation_grid(self, config: Any) -> list[tuple[str, dict[str, Any]]]:
        """augment: auto's candidates: word crop and word dropout, and the rate of the dropout
        blocks that open the backbone (the dropout on the embedding picture), when it has them."""
        leading = []
        for position, block in enumerate(config.model.blocks):
            if not (isinstance(block, dict) and list(block) == ["dropout"] and isinstance(block["dropout"], (int, float))):
                break
            leading.append(position)
        return [(name, {"augment.word_crop": crop, "augment.word_dropout": hide,
                        **{f"model.blocks.{position}.dropout": dropout for position in leading}})
                for name, crop, hide, dropout in REGULARISATION_GRID]

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
        return (f"text {self.channels}x{self.length}x{options.embedding_dim}: {options.max_length} tokens "
                f"({options.tokenizer} tokenizer, vocabulary {vocabulary}) x {options.embedding_dim}-dim "
                f"{options.embeddings} embeddings{source}{subwords}")

    def preprocessing(self) -> dict[str, Any]:
        """For a server: tokenize, look up ids in the vocabulary (its position is the id), pad or
        cut to max_length; the network holds the embeddings."""
        options = self.options
        steps = ["lowercase the sentence" if options.lowercase else "keep the sentence's case",
                 f"split it into tokens with cnncli's {options.tokenizer!r} tokenizer "
                 "(cnncli.modalities.text.tokenize)",
                 f"map each token to its position in the vocabulary; unknown tokens to {UNK_ID}",
                 f"keep the first {options.max_length} ids and pad with {PAD_ID} to exactly {options.max_length}"]
        described = {"tokenizer": options.tokenizer, "lowercase": options.lowercase, "max_length": options.max_length,
                     "pad_id": PAD_ID, "unknown_id": UNK_ID, "vocabulary": self.require_vocabulary().state_dict()}
        if options.subword_buckets:
            low, high = options.subword_sizes
            steps.append(f"beside each word id, the ids of the token's character {low}- to {high}-grams of "
                         f"'<token>', shortest first, at most {MAX_PER_TOKEN}: {len(self.require_vocabulary())} + "
                         f"CRC-32 of the n-gram's UTF-8 bytes mod {options.subword_buckets}, padded with {PAD_ID} "
                         f"(cnncli.modalities.text.subwords.subword_ids); padding tokens have none")
            described.update(subword_buckets=options.subword_buckets, subword_sizes=options.subword_sizes)
        return {"steps": steps, **described}

    # -- predict and inspect ---------------------------------------------------------------------

    def expand_inputs(self, arguments: Iterable[str]) -> Iterator[Sample]:
        """Each argument is a sentence, a text file (one sentence per line), a folder of .txt files
        (one sample per file), a glob matching such files or folders, or '-' (one sentence per
        line of stdin). A glob that matches nothing is a sentence ("is it good?")."""
        for argument in arguments:
            path = Path(argument)
            if argument == "-":
                for number, line in enumerate(sys.stdin, start=1):
                    if line.strip():
                        yield Sample(f"<stdin>:{number}", content=line.strip(), position=number - 1)
            elif _names_a_file_or_folder(path):
                yield from self._samples_at(path)
            elif glob.has_magic(argument) and (matches := sorted(glob.glob(argument, recursive=True))):
                for match in matches:
                    yield from self._samples_at(Path(match))
            else:
                yield Sample(argument, content=argument)

    def _samples_at(self, path: Path) -> Iterator[Sample]:
        """A folder's .txt files (one sample each), or a file's lines (one sample each). A file
        that cannot be read, or holds no line, is one sample whose encoding reports why."""
        if path.is_dir():
            yield from (Sample(str(file)) for file in list_files(path, self.extensions))
            return
        try:
            lines = read_lines(path, self.encoding, self.encoding_hint)
        except CnncliError:
            lines = []
        if not lines:
            yield Sample(str(path))
            return
        yield from (Sample(f"{path}:{n + 1}", content=line, position=n) for n, line in enumerate(lines))

    def explain(self, network: nn.Module, sample: Sample) -> list[dict]:
        """Rows for inspect: each token's gradient x input saliency for the predicted class."""
        known = self.require_vocabulary().index
        tokens = self.tokens(sample)[:self.length]
        scores = token_saliency(network, self.encode(sample))
        return [{"position": position, "token": token, "saliency": round(score, 6), "known": token in known}
                for position, (token, score) in enumerate(zip(tokens, scores))]

    def draw(self, sample: Sample, path: Path, network: nn.Module | None = None) -> None:
        """The sentence as the network sees it (its embedding matrix), with token saliency when
        `network` is given."""
        stem = network.stem if network is not None else self.stem
        ids = self.encode(sample)
        scores = token_saliency(network, ids) if network is not None else None
        write_file(path, tokens_png(self._shown_tokens(sample), ids, stem, scores,
                                    "saliency for the predicted class"))

    def draw_heatmap(self, sample: Sample, heat: torch.Tensor, network: nn.Module, caption: str) -> bytes:
        """The heat map as one bar per token (its row of the picture), beside the embedding matrix."""
        tokens = self._shown_tokens(sample)
        return tokens_png(tokens, self.encode(sample), network.stem, heat.mean(dim=1)[:len(tokens)].tolist(), caption)

    def draw_thumbnail(self, sample: Sample, axis, network: nn.Module | None = None) -> None:
        """The sentence's words; with a network, coloured by their saliency for its predicted class."""
        scores = token_saliency(network, self.encode(sample)) if network is not None else None
        words_thumbnail(axis, self.tokens(sample)[:self.length], scores)

    def measure(self, sample: Sample) -> dict[str, Any]:
        """How many tokens the sentence has, and whether max_length cuts it (not known before
        training with max_length: auto)."""
        count = len(self.tokens(sample))
        if self.options.max_length == "auto":
            return {"tokens": count}
        return {"tokens": count, "cut": "yes" if count > self.options.max_length else "no"}

    def _shown_tokens(self, sample: Sample) -> list[str]:
        known = self.require_vocabulary().index
        tokens = self.tokens(sample)[:self.length]
        return [token if token in known else f"{token} (unk)" for token in tokens]


def length_from_data(sentences: Sequence[Sequence[str]]) -> int:
    """max_length: auto: the AUTO_LENGTH_PERCENTILE of the training samples' token counts (at
    least 1, at most AUTO_LENGTH_CAP), so a rare very long line does not widen every sample."""
    lengths = sorted(len(tokens) for tokens in sentences)
    if not lengths:
        return UNFITTED_LENGTH
    index = min(len(lengths) - 1, max(0, math.ceil(AUTO_LENGTH_PERCENTILE * len(lengths)) - 1))
    return max(1, min(lengths[index], AUTO_LENGTH_CAP))


def _names_a_file_or_folder(path: Path) -> bool:
    """Whether an argument is a file or folder; a sentence too long for a file name (or holding a
    NUL) is simply not one, where pathlib would raise."""
    try:
        return path.is_dir() or path.is_file()
    except (OSError, ValueError):
        return False
