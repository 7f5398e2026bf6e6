"""Sound as a picture: decode, resample to one rate, mix to mono, pad/crop, log-mel (or STFT, MFCC).

Two encodings. Bundles since issue 15 encode a recording as its fixed-length waveform at the
recipe's rate, (1, samples), and compute the features in the stem, on the network's device
(`WaveformStem`): training augmentation can then act on the sound itself (noise, speed, gain)
before the features. Older bundles encode the dB spectrogram, (1, bands, frames), and their
stem only normalises it (`BandNormalize`); they load and predict as they always did. Either
way the feature cache (the user's cache folder, across runs: cache.py) keeps what is expensive
to recompute (decoding, resampling; the spectrogram for the older encoding), and the stem
subtracts the per-band mean and divides by the per-band std fitted on the training split, so the
normalisation travels with the weights. A long recording is cut into windows or into the sounds
found in it for `predict` (spans.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.files.atomic import write_file
from cnncli.modalities.audio.augment import (
    BackgroundNoise,
    augment_spectrograms,
    augment_waveforms,
    spectrogram_augmenting,
    spectrograms_of,
    waveform_augmenting,
)
from cnncli.modalities.audio.background import background_samples, synthesise_background
from cnncli.modalities.audio.cache import FeatureCache
from cnncli.modalities.audio.decoding import AUDIO_EXTENSIONS, decode, read_bytes, recording_facts
from cnncli.modalities.audio.description import describe, preprocessing
from cnncli.modalities.audio.drawing import heatmap_png, spectrogram_png, thumbnail
from cnncli.modalities.audio.features import (
    FeatureExtractor,
    Spectrogram,
    band_count,
    fit_length,
    frame_count,
    params_json,
    target_length,
    too_loud,
)
from cnncli.modalities.audio.options import AudioAugment, AudioOptions, augment_problems, option_problems
from cnncli.modalities.audio.spans import is_sound, recording_spans, streamed_spans
from cnncli.modalities.audio.stem import BandNormalize, WaveformStem
from cnncli.modalities.base import Modality, ProgressCallback, SpanBatch, Window, stem_picture
from cnncli.modalities.encoded import Encoded, finite_only, state_numbers

FEATURE_BATCH = 256  # recordings per feature call: large enough to amortise, small enough for memory
STATISTICS_CHUNK = 256  # recordings per float64 pass when fitting the normalisation
ENCODINGS = ("waveform", "spectrogram")  # what an encoded sample is; bundles without the key: spectrogram


class AudioModality(Modality):
    name = "audio"
    extensions = AUDIO_EXTENSIONS
    options_type = AudioOptions
    augment_type = AudioAugment
    finds_spans = True  # the sounds of a recording (spans.py)
    # options that came later, with the value a bundle that does not record them was trained with
    options_before_recorded = {"remove_dc": False}
    retired_options = {"cache": "the feature cache folder is --cache-dir or CNNCLI_CACHE_DIR (--no-cache: none)"}
    thumbnail_aspect = 2.0
    # 40-band pictures of a second through recipes/fsdd.yaml's network, one thread: 32 per forward
    # pass ran 5 to 10% faster than 64 and twice as fast as 256 (the activations fit the caches)
    inference_batch_size = 32
    rows_upward = True

    def __init__(self, options: AudioOptions, augment: AudioAugment | None = None,
                 mean: list[float] | None = None, std: list[float] | None = None,
                 encoding: str = "waveform", root: str = "."):
        for key, message in option_problems(options):
            raise CnncliError(f"data.audio.{key}: {message}")
        for key, message in augment_problems(augment or AudioAugment()):
            raise CnncliError(f"augment.{key}: {message}")
        if encoding not in ENCODINGS:
            raise CnncliError(f"audio encoding {encoding!r}: unknown (known: {', '.join(ENCODINGS)})")
        self.options = options
        self.augment_config = augment or AudioAugment()
        self.encoding = encoding
        self.root = root  # augment.background is relative to data.root
        bands = band_count(options)
        self.mean = mean or [0.0] * bands
        self.std = std or [1.0] * bands
        self._extractor: FeatureExtractor | None = None
        self._background: BackgroundNoise | None = None
        self.cache_folder: Path | None = None

    @classmethod
    def from_config(cls, config: Any) -> "AudioModality":
        return cls(cls.options_from(config), cls.augment_from(config), root=config.data.root)

    @classmethod
    def check_options(cls, options: AudioOptions) -> list[tuple[str, str]]:
        return option_problems(options)

    @classmethod
    def check_augment(cls, augment: Any) -> list[tuple[str, str]]:
        return augment_problems(augment)

    def use_cache(self, folder: Path | None) -> None:
        self.cache_folder = folder

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "AudioModality":
        options = AudioOptions(**state["options"])
        bands = band_count(options)
        return cls(options, None, state_numbers(state, "mean", bands), state_numbers(state, "std", bands),
                   state.get("encoding", "spectrogram"))

    def state_dict(self) -> dict[str, Any]:
        return {"options": dataclasses.asdict(self.options), "encoding": self.encoding,
                "mean": self.mean, "std": self.std}

    @property
    def waveforms(self) -> bool:
        return self.encoding == "waveform"

    @property
    def shape_from_recipe(self) -> bool:
        return True

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.waveforms:
            return (1, target_length(self.options))
        return self.featurized_shape

    @property
    def featurized_shape(self) -> tuple[int, ...]:
        return (1, band_count(self.options), frame_count(self.options))

    @property
    def export_shape(self) -> tuple[int, ...]:
        """An exported graph starts at the dB picture (see `preprocessing`), whichever encoding."""
        return self.featurized_shape

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.options)
        return self._extractor

    # -- encoding ------------------------------------------------------------------------------

    def encode(self, sample: Sample) -> torch.Tensor:
        encoded = self.encode_many([sample])
        if encoded.failures:
            raise CnncliError(encoded.failures[0])
        return encoded.tensor[0]

    def encode_waveforms(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(N, samples) fixed-length waveforms at the recipe's rate -> encoded batch."""
        return waveforms.float().unsqueeze(1) if self.waveforms else self.extractor(waveforms)

    def cache_params(self) -> str:
        if self.waveforms:  # the cache keeps the decoded, resampled, padded waveform
            return params_json(self.options, keep=("sample_rate", "duration", "remove_dc"), kind="waveform")
        return params_json(self.options)

    def encode_many(self, samples: Sequence[Sample], progress: ProgressCallback | None = None) -> Encoded:
        """Cached entries where present; the rest decoded one file at a time, encoded a batch at a time."""
        cache = FeatureCache(self.cache_folder, self.cache_params())
        length = target_length(self.options)
        results: dict[int, torch.Tensor] = {}
        failures: dict[int, str] = {}
        for start in range(0, len(samples), FEATURE_BATCH):
            pending: list[tuple[int, str | None, torch.Tensor]] = []  # (position, cache key, waveform)
            for position in range(start, min(start + FEATURE_BATCH, len(samples))):
                sample = samples[position]
                try:
                    if sample.content is not None:  # made, not read: the rows of the background class
                        pending.append((position, None, synthesise_background(sample, length, self.background)))
                        continue
                    content = read_bytes(sample.locator)
                    key = cache.key(content)
                    cached = cache.get(key)
                    if cached is not None and tuple(cached.shape) == self.input_shape:
                        results[position] = cached
                    else:
                        waveform = fit_length(decode(sample.locator, content, self.sample_rate), length,
                                              self.options.remove_dc)
                        pending.append((position, key, waveform))
                except CnncliError as error:
                    failures[position] = str(error)
            if pending:
                waveforms = torch.stack([waveform for _, _, waveform in pending])
                loud = too_loud(waveforms, self.options).tolist()
                encoded = self.encode_waveforms(waveforms)
                for (position, key, _), row, too_large in zip(pending, encoded, loud):
                    if too_large:
                        failures[position] = f"{samples[position].locator}: its samples are too large to make " \
                                             "finite features"
                        continue
                    results[position] = row
                    if key is not None:
                        cache.put(key, row)
            if progress:
                progress(min(start + FEATURE_BATCH, len(samples)) - start)
        index = sorted(results)
        tensor = torch.stack([results[i] for i in index]) if index else torch.empty((0, *self.input_shape))
        notes = [f"the feature cache could not be written ({len(cache.write_errors)} entries), e.g. "
                 f"{cache.write_errors[0]}"] if cache.write_errors else []
        encoded = Encoded(tensor, index, dict(sorted(failures.items())), notes)
        # Waveform rows are finite by construction (decode refuses NaN and infinity, too_loud what
        # would overflow the features), and a pass over them cost 10% of decoding.
        return encoded if self.waveforms else finite_only(encoded, samples)

    @property
    def sample_rate(self) -> int:
        return self.options.sample_rate

    def spans(self, locator: str, batch_size: int = 64, window: Window | None = None,
              latency: float | None = None) -> Iterator[SpanBatch]:
        """Windows slid over a long recording, or the sounds found in it (spans.py)."""
        return recording_spans(locator, self.options, self.encode_waveforms, batch_size, window, latency)

    def stream_spans(self, locator: str, layout: str | None = None,
                     latency: float | None = None) -> Iterator[SpanBatch]:
        """The sounds of a recording as it arrives, WAV or raw PCM as `layout` says (spans.py)."""
        return streamed_spans(locator, layout, self.options, self.encode_waveforms, latency)

    def keeps_found_span(self, label: str) -> bool:
        return is_sound(label)

    def featurize(self, batch: torch.Tensor) -> torch.Tensor:
        """The spectrogram of an encoded batch, before normalisation: what the stem's normalisation
        and the backbone read (an exported graph may start here)."""
        if not self.waveforms or batch.dim() == 4:
            return batch.float()
        with torch.no_grad():
            return self.features_on(batch.device)(batch[:, 0])

    def features_on(self, device) -> Spectrogram:
        return self.extractor.module.to(device)

    # -- fitting and the stem ------------------------------------------------------------------

    def fit(self, samples: Sequence[Sample]) -> None:
        """Read the background noise recordings, if the recipe names a folder of them."""
        if self.augment_config.background and self._background is None:
            folder = Path(self.root) / Path(self.augment_config.background).expanduser()
            self._background = BackgroundNoise(folder, self.sample_rate)

    @property
    def background(self) -> BackgroundNoise | None:
        return self._background

    def extra_training_samples(self, samples: Sequence[Sample]) -> list[Sample]:
        """With augment.background_class: noise-only rows of a "background" class."""
        return background_samples(len(samples), self.augment_config.background_class)

    def fit_encoded(self, encoded: torch.Tensor) -> None:
        self.fit_encoded_chunks(encoded.split(STATISTICS_CHUNK))

    def fit_encoded_chunks(self, chunks) -> None:
        """Per-band mean and std over every training recording and frame of the features, summed
        in float64 a chunk at a time, so memory stays flat for any number of recordings."""
        if not self.options.normalize:
            return
        bands = band_count(self.options)
        total = torch.zeros(bands, dtype=torch.float64)
        square = torch.zeros(bands, dtype=torch.float64)
        count = 0
        for chunk in chunks:
            for part in chunk.split(STATISTICS_CHUNK):
                values = self.featurize(part).to(torch.float64)
                total += values.sum(dim=(0, 1, 3))
                square += (values ** 2).sum(dim=(0, 1, 3))
                count += len(part) * values.shape[1] * values.shape[3]
        if count == 0:
            return
        mean = total / count
        variance = (square / count - mean ** 2).clamp(min=1e-8)
        self.mean = [round(float(m), 6) for m in mean]
        self.std = [round(float(s), 6) for s in variance.sqrt()]

    def stem_size(self) -> tuple[tuple[int, ...], int]:
        """The picture's shape, worked out: running a waveform stem on a long recording's zeros
        to learn it would cost the memory the size check is there to protect. No parameters."""
        return self.featurized_shape, 0

    def build_stem(self) -> nn.Module:
        if self.waveforms:
            return WaveformStem(self.options, self.mean, self.std)
        return BandNormalize(self.mean, self.std)

    # -- augmentation --------------------------------------------------------------------------

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Waveform batches: speed, shift, noise, gain on the sound, then its features (pitch
        warps them), then masks and spectrogram noise; the stem sees the features. Spectrogram
        batches (older bundles): shift, gain, masks, noise on the dB picture."""
        settings = self.augment_config
        if batch.dim() == 4 and not (spectrogram_augmenting(settings) or settings.time_shift or settings.gain_db):
            return batch
        if batch.dim() == 3 and not (waveform_augmenting(settings) or spectrogram_augmenting(settings)):
            return batch
        device = batch.device
        mean = torch.tensor(self.mean, device=device).view(1, 1, -1, 1)
        std = torch.tensor(self.std, device=device).view(1, 1, -1, 1)
        if batch.dim() == 4:
            return augment_spectrograms(batch, settings, self.options, mean, std, generator)
        waves = augment_waveforms(batch[:, 0].float(), settings, self.sample_rate, generator, self.background)
        pictures = spectrograms_of(waves, self.features_on(device), settings, generator)
        if not spectrogram_augmenting(settings):
            return pictures
        return augment_spectrograms(pictures, settings, self.options, mean, std, generator, gain=False)

    # -- describing and drawing ----------------------------------------------------------------

    def describe(self) -> str:
        return describe(self.options, self.waveforms)

    def preprocessing(self) -> dict[str, Any]:
        """For a server: the waveform and spectrogram parameters that make the encoded dB picture;
        the network normalises each band itself."""
        return preprocessing(self.options, self.mean, self.std)

    def draw(self, sample: Sample, path: Path, network: nn.Module | None = None) -> None:
        """The spectrogram after the stem (what the first convolution reads), seconds by Hz."""
        stem = network.stem if network is not None else self.build_stem()
        with torch.no_grad():
            picture = stem(self.encode(sample).unsqueeze(0))[0, 0].numpy()
        title = f"{Path(sample.locator).name}: {self.options.features}"
        write_file(path, spectrogram_png(picture, self.options, title, self.options.normalize and any(self.mean)))

    def draw_heatmap(self, sample: Sample, heat: torch.Tensor, network: nn.Module, caption: str) -> bytes:
        """The heat map over the picture after the stem, on time and frequency axes."""
        return heatmap_png(stem_picture(network, self.encode(sample))[0].numpy(), heat, self.options, caption)

    def draw_thumbnail(self, sample: Sample, axis, network: nn.Module | None = None) -> None:
        """The picture (after the stem with a network, else in dB) above the waveform it came from."""
        encoded = self.encode(sample)
        picture = stem_picture(network, encoded) if network is not None else self.featurize(encoded.unsqueeze(0))[0]
        waveform = fit_length(decode(sample.locator, read_bytes(sample.locator), self.options.sample_rate),
                              target_length(self.options), self.options.remove_dc)
        thumbnail(axis, picture[0].numpy(), waveform, self.options)

    def measure(self, sample: Sample) -> dict[str, Any]:
        """Duration, sample rate and channels as stored, after a full decode."""
        return recording_facts(sample.locator)
