"""The interface every modality implements; everything after the stem is shared.

Life of a modality object:

    modality = Modality.from_config(config) # options from the recipe (data.<name>, its augment keys)
    modality.fit(train_samples)            # learn from raw training samples (a vocabulary)
    x = modality.encode_many(samples)      # deterministic, cacheable: samples -> fixed-shape tensor
    modality.fit_encoded(x_train)          # learn statistics of encoded data (normalisation)
    batch = modality.augment(batch, rng)   # training only: random transforms of a batch, on device
    stem = modality.build_stem()           # encoded batch -> float (N, C, H, W) for the backbone
    state = modality.state_dict()          # JSON-able; Modality.from_state(state) rebuilds it

So prediction applies exactly the preprocessing that training used: the bundle stores `state`.
Every capability the core uses is declared here with a default, so a new modality overrides
what it has and inherits a clear answer for what it lacks.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from cnncli.data.sample import Sample
from cnncli.data.sources import expand_paths
from cnncli.errors import CnncliError
from cnncli.modalities.encoded import Encoded, finite_only
from cnncli.nn.blocks import output_shape

ProgressCallback = Callable[[int], None]  # called with the number of samples just finished
Window = tuple[float, float]  # (seconds, hop seconds) of the windows slid over a long input
SpanBatch = tuple[list[tuple[float, float]], torch.Tensor]  # ([(start_s, end_s), ...], encoded batch)


@dataclass
class NoOptions:
    """The options section of a modality that has none."""


class Modality(ABC):
    """Turns samples of one kind (image, audio, text) into tensors the shared backbone reads."""

    name: ClassVar[str]
    # File suffixes (lower case, with dot) that folder and glob discovery pick up for this modality.
    extensions: ClassVar[tuple[str, ...]]
    # The dataclass of this modality's `data.<name>` recipe section, and of its `augment` keys.
    options_type: ClassVar[type] = NoOptions
    augment_type: ClassVar[type] = NoOptions
    # Keys of `data.<name>` that older versions wrote and this one ignores, each with what replaced
    # it: old recipes and bundles still load, and `--set` of one says what to use instead.
    retired_options: ClassVar[dict[str, str]] = {}
    # Keys of `data.<name>` added later, each with the value a bundle that does not record it was
    # trained with (a new default may differ): such a bundle predicts as it always did.
    options_before_recorded: ClassVar[dict[str, Any]] = {}
    # Whether a sample may be a line of text itself (a sentence) rather than a file to read.
    text_samples: ClassVar[bool] = False
    # Column names a manifest's samples themselves (not paths to them) are found under when the
    # recipe's data.text_column is not there, for training and predict alike (text: sentences).
    content_columns: ClassVar[tuple[str, ...]] = ()
    # Whether `spans` finds by itself the parts of one long input that deserve a row each (audio:
    # the sounds of a recording), for `predict --segment`.
    finds_spans: ClassVar[bool] = False
    # Whether training may stream samples from their files, `encode` running in DataLoader worker
    # processes, when the encoded splits would not fit in memory (data.in_memory).
    can_stream: ClassVar[bool] = True
    # Inputs per forward pass when `predict` runs on a CPU and the user did not choose: the size
    # whose activations stay in the CPU's caches for this modality's networks.
    inference_batch_size: ClassVar[int] = 64
    # The backbone `cnncli train DATA_FOLDER` uses (None: the small CNN of cnncli.recipe.defaults), and
    # the `data.<name>` options it sets there.
    default_blocks: ClassVar[list | None] = None
    default_options: ClassVar[dict] = {}
    # A whole general recipe (its model, train and augment sections, data.<name> and data keys
    # such as encoding) that `cnncli train DATA` uses instead of the two above, when the modality
    # has one (text: recipes/text.yaml).
    default_recipe: ClassVar[dict | None] = None
    tune_space: ClassVar[dict] = {}  # what `cnncli tune` searches in a recipe with no tune: section ({}: general)
    # Width / height of one sample's cell in a grid of samples (Modality.draw_thumbnail).
    thumbnail_aspect: ClassVar[float] = 1.0
    # Whether row 0 of the picture the backbone reads belongs at the bottom (audio: the lowest
    # band), so that feature maps are drawn the right way up.
    rows_upward: ClassVar[bool] = False

    # -- building --------------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any) -> "Modality":
        """Build an unfitted modality from a resolved recipe."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> "Modality":
        """Rebuild a fitted modality from `state_dict()` output; runs no code from the bundle."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything prediction needs (options and fitted state), as JSON-able data."""

    @classmethod
    def check_options(cls, options: Any) -> list[tuple[str, str]]:
        """(key, what is wrong) for each value of the `data.<name>` section out of its range, checked
        when a recipe is read. Default: the types say it all."""
        return []

    @classmethod
    def check_augment(cls, augment: Any) -> list[tuple[str, str]]:
        """(key, what is wrong) for each of this modality's keys of a recipe's `augment` section
        out of its range. Default: the types say it all."""
        return []

    @classmethod
    def options_from(cls, config: Any) -> Any:
        """A copy of this modality's `data.<name>` section of a resolved recipe."""
        return dataclasses.replace(getattr(config.data, cls.name))

    @classmethod
    def augment_from(cls, config: Any) -> Any:
        """This modality's augment settings from a recipe; another modality's key set away from
        its default is an error, so that a typo or a misplaced setting is never silently ignored."""
        own = {item.name for item in dataclasses.fields(cls.augment_type)}
        section = config.augment
        for item in dataclasses.fields(section):
            if item.name == "auto":  # the core's own key (augment: auto), not a modality's
                continue
            default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
            if item.name not in own and getattr(section, item.name) != default:
                usable = ", ".join(sorted(own)) or "none"
                raise CnncliError(f"augment.{item.name}: does not apply to {cls.name} data (usable: {usable})")
            if getattr(section, "auto", False) and getattr(section, item.name) != default:
                raise CnncliError(f"augment.{item.name}: is chosen by augment: auto; set augment.auto=false "
                                  "to set it yourself")
        return cls.augment_type(**{name: getattr(section, name) for name in own})

    def regularisation_grid(self, config: Any) -> list[tuple[str, dict[str, Any]]]:
        """The candidates `augment: auto` chooses among on validation: (name, {dotted recipe key:
        value}), e.g. augmentation strengths and the dropout that goes with them. The first is
        the fallback when there is nothing to validate on. Default: none, so nothing is chosen."""
        return []

    def use_augment(self, config: Any) -> None:
        """Take the augment settings of `config` (auto tries several on one fitted modality)."""
        self.augment_config = self.augment_from(config)

    # -- fitting and encoding --------------------------------------------------------------------

    def fit(self, samples: Sequence[Sample]) -> None:
        """Learn from raw training samples before encoding (e.g. a vocabulary). Default: nothing."""

    def use_cache(self, folder: Path | None) -> None:
        """Where this modality may keep what it can recompute (audio features), chosen by the user
        for this run (cnncli.files.cache), never by a recipe or a bundle; None: nowhere. Default: it
        keeps nothing."""

    @abstractmethod
    def encode(self, sample: Sample) -> torch.Tensor:
        """Decode one sample into its fixed-shape tensor; raise CnncliError naming its locator."""

    def encode_many(self, samples: Sequence[Sample], progress: ProgressCallback | None = None) -> Encoded:
        """Encode many samples, collecting per-sample errors instead of stopping at the first.

        Modalities with a faster batched path (audio features, a cache) override this.
        """
        rows, index, failures = [], [], {}
        for position, sample in enumerate(samples):
            try:
                rows.append(self.encode_row(sample))
                index.append(position)
            except CnncliError as error:
                failures[position] = str(error)
            if progress:
                progress(1)
        stacked = self.stack_rows(rows) if rows else torch.empty((0, *self.input_shape), dtype=self.input_dtype)
        return finite_only(Encoded(stacked, index, failures), samples)

    def encode_row(self, sample: Sample) -> Any:
        """The sample as encode_many gathers it before `stack_rows`: its tensor, unless a modality
        has a cheaper form (text: a list of ids, one tensor made for the whole batch)."""
        return self.encode(sample)

    def stack_rows(self, rows: list) -> torch.Tensor:
        return torch.stack(rows)

    def use_preprocessing(self, expected: dict[str, Any]) -> list[str]:
        """Before `fit`, take what pretrained weights expect (timm's mean, std, input_size) where it fits; notes."""
        return []

    def auto_blocks(self, samples: int) -> list[tuple[list, str]]:
        """`model.blocks: auto`'s candidates for `samples` training samples, as (blocks, the line
        that says what they are): the data's own first, then smaller ones (for a time budget).
        Default: none, and auto is refused (only images size a backbone to their data today)."""
        return []

    def fitted_notes(self) -> list[str]:
        """Lines worth printing about what `fit` chose from the data. Default: none."""
        return []

    def extra_training_samples(self, samples: Sequence[Sample]) -> list[Sample]:
        """Samples the modality adds to the training split (audio: rows of a background class,
        made rather than read), after `fit`. Default: none."""
        return []

    def fit_encoded(self, encoded: torch.Tensor) -> None:
        """Learn statistics of the encoded training tensor (e.g. normalisation). Default: nothing."""

    def fit_encoded_chunks(self, chunks: Iterable[torch.Tensor]) -> None:
        """The same as `fit_encoded`, from the training tensor's rows in consecutive chunks, so that
        a streamed training set is never held whole. Default: `fit_encoded` on the chunks put
        together (a modality whose statistics can be summed chunk by chunk overrides this)."""
        if type(self).fit_encoded is not Modality.fit_encoded:
            parts = list(chunks)
            if parts:
                self.fit_encoded(torch.cat(parts))

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random training-time transforms of an encoded batch (on its device). Default: none."""
        return batch

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one encoded sample (what `encode` returns)."""

    @property
    def export_shape(self) -> tuple[int, ...]:
        """Shape of one input of an exported graph (`cnncli export`), which starts where the
        modality's `preprocessing()` ends. Default: the encoded sample."""
        return self.input_shape

    @property
    def shape_from_recipe(self) -> bool:
        """Whether the recipe alone fixes `input_shape` (and the stem's size), so the network's size
        can be checked before any data are read; otherwise it is checked after `fit`. Default: no."""
        return False

    @property
    def input_dtype(self) -> torch.dtype:
        """Type of encoded samples: float by default (images are uint8, token ids int64)."""
        return torch.float32

    def featurize(self, batch: torch.Tensor) -> torch.Tensor:
        """An encoded batch as the stem's trainable or normalising part reads it: where an exported
        graph may start, and the picture inspection shows. Audio that encodes waveforms computes
        its spectrogram here (the stem does the same on waveforms, and passes spectrograms
        through). Default: the batch itself."""
        return batch

    @property
    def featurized_shape(self) -> tuple[int, ...]:
        """Shape of one sample after `featurize`. Default: `input_shape`."""
        return self.input_shape

    # -- the network -----------------------------------------------------------------------------

    @abstractmethod
    def build_stem(self) -> nn.Module:
        """The modality's first module: encoded batch -> float (N, C, H, W) for the backbone."""

    def stem_size(self) -> tuple[tuple[int, ...], int]:
        """(shape of one sample after the stem, the stem's parameters), for checking a network's
        size before it is built. Default: build the stem and run it once on zeros, which suits a
        light stem; a modality whose stem holds a large table works it out instead (text)."""
        stem = self.build_stem()
        shape = output_shape(stem, tuple(self.input_shape), dtype=self.input_dtype)
        return shape, sum(parameter.numel() for parameter in stem.parameters())

    def test_views(self) -> nn.Module | None:
        """What a network of this modality averages over when it predicts, beside the input
        itself (cnncli.nn.model.Network): None, or a module called with the stem's output and the
        rest of the network (images: the mirror image, when training flipped them). Default: None."""
        return None

    def adapt_stem(self, stem: nn.Module, backbone: nn.Module) -> bool:
        """Tell the stem what it may learn from the backbone built after it; True when the stem
        then cuts training batches to the rows the backbone needs (text), so the work per sample
        varies from batch to batch. Default: nothing to learn, False."""
        return False

    # -- predict and inspect ---------------------------------------------------------------------

    @abstractmethod
    def describe(self) -> str:
        """One line for the input row of `inspect`: what the network sees and how it was made."""

    def preprocessing(self) -> dict[str, Any]:
        """What a server must do to a raw input to make the encoded input an exported network
        reads (`cnncli export` writes it beside the ONNX file), as JSON. The exported graph starts
        at the encoded input and includes the stem (normalisation, embeddings). Default: the
        modality's state, which is everything cnncli itself uses."""
        return {"state": self.state_dict()}

    def expand_inputs(self, arguments: Iterable[str]) -> Iterable[Sample]:
        """Turn `predict` arguments into samples. Default: files, folders and globs ('-' reads
        paths from stdin); text reads sentences too."""
        return expand_paths(arguments, self.extensions)

    def inference_batches(self, encoded: torch.Tensor,
                          batch_size: int) -> Iterator[tuple[slice | torch.Tensor, torch.Tensor]]:
        """Encoded rows cut into forward batches for prediction, as (their positions, batch).
        Default: consecutive slices. A modality whose rows vary in real size (text: sentence
        lengths) may group similar rows and cut each batch to what the network reads of it."""
        for start in range(0, len(encoded), batch_size):
            yield slice(start, start + batch_size), encoded[start:start + batch_size]

    def spans(self, locator: str, batch_size: int = 64, window: Window | None = None,
              latency: float | None = None) -> Iterator[SpanBatch]:
        """One long input cut into spans, each encoded as a training sample is and predicted as a
        row of its own, as ([(start_s, end_s), ...], encoded batch) chunks of up to `batch_size`:
        windows of `window` = (seconds, hop seconds) slid over it, or without a window the spans
        the modality finds (`finds_spans`), each decided `latency` seconds after it ends (None:
        the modality's default). Default: it cannot be cut."""
        if window is not None:
            raise CnncliError(f"--window: {self.name} inputs cannot be cut into windows (audio can)")
        raise CnncliError(f"--segment: {self.name} inputs cannot be cut into events (audio can)")

    def stream_spans(self, locator: str, layout: str | None = None,
                     latency: float | None = None) -> Iterator[SpanBatch]:
        """The spans found in one input that arrives as it is made ('-': standard input), one at a
        time as soon as each is decided, from the past and `latency` seconds of look-ahead;
        `layout` says how bytes without a header hold the input (audio: s16le:16000:1). The same
        spans as `spans` finds in the whole input at that latency. Default: it cannot be streamed."""
        raise CnncliError(f"--stream: {self.name} inputs cannot be streamed (audio can)")

    def keeps_found_span(self, label: str) -> bool:
        """Whether a span found by `spans` (no window) that the network gives `label` is a row: a
        class the modality adds in training to mean "nothing here" is not (audio: background).
        Default: every span is."""
        return True

    def draw(self, sample: Sample, path: Path, network: nn.Module | None = None) -> None:
        """Write a PNG of `sample` as the network sees it (for `inspect --input`); a modality may
        add what `network` makes of it (text: each token's saliency)."""
        raise CnncliError(f"{self.name} inputs cannot be drawn yet")

    def explain(self, network: nn.Module, sample: Sample) -> list[dict]:
        """Rows for `inspect --input` on what drove the prediction (text: token saliency). Default: none."""
        return []

    def draw_heatmap(self, sample: Sample, heat: torch.Tensor, network: nn.Module, caption: str) -> bytes:
        """PNG of a heat map (Grad-CAM: (H, W), 0..1, on the grid of the stem's output) over the
        sample as the network sees it. Default: over the stem's output, averaged over channels."""
        from cnncli.output.plots import heatmap_png

        return heatmap_png(stem_picture(network, self.encode(sample)).mean(0), heat, caption)

    def draw_thumbnail(self, sample: Sample, axis: Any, network: nn.Module | None = None) -> None:
        """Draw one sample small, into a matplotlib axis of a grid (a gallery of mistakes, the
        samples of a class); with `network`, what the network makes of it where that fits in a
        cell (text: each word's saliency). Default: the stem's output, or the encoded sample."""
        encoded = self.encode(sample)
        picture = stem_picture(network, encoded) if network is not None else encoded.float()
        picture = picture.mean(0) if picture.dim() == 3 else picture.view(1, -1) if picture.dim() == 1 else picture
        axis.imshow(picture.numpy(), cmap="viridis", aspect="auto", interpolation="nearest")
        axis.axis("off")

    def measure(self, sample: Sample) -> dict[str, Any]:
        """What `inspect DATA` counts of one sample before training (image: height, width and
        colour mode; audio: seconds, rate, channels; text: tokens), read as cheaply as a full
        check allows; raise CnncliError naming the sample when it cannot be read. Numbers are
        summarised by range and median, strings by their most common values. Default: the
        encoded shape."""
        return {"shape": "x".join(str(size) for size in self.encode(sample).shape)}


def stem_picture(network: nn.Module, encoded: torch.Tensor) -> torch.Tensor:
    """What the backbone reads of one encoded sample: the (C, H, W) output of the network's stem."""
    device = next(network.parameters()).device
    with torch.no_grad():
        return network.stem(encoded.unsqueeze(0).to(device))[0].float().cpu()
