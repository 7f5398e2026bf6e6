"""The small interface every modality implements; everything after the stem is shared.

Life of a modality object:

    modality = Modality(config)            # options from the recipe (data.<modality>, augment)
    modality.fit(train_samples)            # learn from raw training samples (a vocabulary)
    x = modality.encode_many(samples)      # deterministic, cacheable: samples -> fixed-shape tensor
    modality.fit_encoded(x_train)          # learn statistics of encoded data (normalisation)
    batch = modality.augment(batch, rng)   # training only: random transforms of a batch, on device
    stem = modality.build_stem()           # encoded batch -> float (N, C, H, W) for the backbone
    state = modality.state_dict()          # JSON-able; Modality.from_state(state) rebuilds it

So prediction applies exactly the preprocessing that training used: the bundle stores `state`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cnncli.data.sample import Sample
from cnncli.errors import CnncliError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cnncli.config import Config


@dataclass
class Encoded:
    """Encoded samples: one tensor for those that worked, and an error per sample that did not.

    `index[i]` is the position in the input sequence of row i of `tensor`; `failures` maps an
    input position to its error message (which names the file).
    """

    tensor: "torch.Tensor"
    index: list[int]
    failures: dict[int, str]


ProgressCallback = Callable[[int], None]  # called with the number of samples just finished


class Modality(ABC):
    """Turns samples of one kind (image, audio, text) into tensors the shared backbone reads."""

    name: ClassVar[str]
    # File suffixes (lower case, with dot) that folder and glob discovery pick up for this modality.
    extensions: ClassVar[tuple[str, ...]]
    # Keys of the `augment` recipe section this modality uses; setting another one is an error.
    augment_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def from_config(cls, config: "Config") -> "Modality":
        """Build an unfitted modality from a resolved recipe."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> "Modality":
        """Rebuild a fitted modality from `state_dict()` output; runs no code from the bundle."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything prediction needs (options and fitted state), as JSON-able data."""

    def fit(self, samples: Sequence[Sample]) -> None:
        """Learn from raw training samples before encoding (e.g. a vocabulary). Default: nothing."""

    @abstractmethod
    def encode(self, sample: Sample) -> "torch.Tensor":
        """Decode one sample into its fixed-shape tensor; raise CnncliError naming its locator."""

    def encode_many(self, samples: Sequence[Sample], progress: ProgressCallback | None = None) -> Encoded:
        """Encode many samples, collecting per-sample errors instead of stopping at the first.

        Modalities with a faster batched path (audio features, a cache) override this.
        """
        import torch

        tensors, index, failures = [], [], {}
        for position, sample in enumerate(samples):
            try:
                tensors.append(self.encode(sample))
                index.append(position)
            except CnncliError as error:
                failures[position] = str(error)
            if progress:
                progress(1)
        stacked = torch.stack(tensors) if tensors else torch.empty((0, *self.input_shape))
        return Encoded(stacked, index, failures)

    def fit_encoded(self, encoded: "torch.Tensor") -> None:
        """Learn statistics of the encoded training tensor (e.g. normalisation). Default: nothing."""

    def augment(self, batch: "torch.Tensor", generator: "torch.Generator") -> "torch.Tensor":
        """Random training-time transforms of an encoded batch (on its device). Default: none."""
        return batch

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one encoded sample (what `encode` returns)."""

    @abstractmethod
    def build_stem(self) -> "nn.Module":
        """The modality's first module: encoded batch -> float (N, C, H, W) for the backbone."""

    @abstractmethod
    def describe(self) -> str:
        """One line for the input row of `inspect`: what the network sees and how it was made."""

    def draw(self, sample: Sample, path: Path, network: nn.Module | None = None) -> None:
        """Write a PNG of `sample` as the network sees it (for `inspect --input`); a modality may
        add what `network` makes of it (text: each token's saliency)."""
        raise CnncliError(f"{self.name} inputs cannot be drawn yet")

    def expand_inputs(self, arguments: Iterable[str]) -> Iterable[Sample] | None:
        """Turn `predict` arguments into samples when the modality reads them its own way
        (sentences for text). None means: treat them as files, folders and globs."""
        return None


def check_augment_keys(modality: type[Modality], config: "Config") -> None:
    """Reject augment settings that do nothing for this modality, so typos are not silent."""
    import dataclasses

    from cnncli.config import AugmentConfig

    defaults = AugmentConfig()
    for item in dataclasses.fields(AugmentConfig):
        value = getattr(config.augment, item.name)
        if value != getattr(defaults, item.name) and item.name not in modality.augment_keys:
            usable = ", ".join(modality.augment_keys) or "none"
            raise CnncliError(
                f"augment.{item.name}: does not apply to {modality.name} data (usable: {usable})"
            )
