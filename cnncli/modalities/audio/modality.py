"""Sound as a picture: decode, resample to one rate, mix to mono, pad/crop, log-mel (or STFT, MFCC).

Encoded recordings are float32 (1, bands, frames) dB spectrograms, row 0 the lowest band. They
are computed a batch at a time and kept in the user's cache folder across runs (cache.py).
The stem subtracts the per-band mean and divides by the per-band std fitted on the training
split, so the normalisation travels with the weights. Augmentation (SpecAugment masks, time
shift, gain, noise) works on batches of encoded spectrograms, on the batch's device.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnncli.atomic import write_file
from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.modalities.audio.cache import FeatureCache
from cnncli.modalities.audio.decoding import (
    AUDIO_EXTENSIONS,
    decode,
    read_bytes,
    recording_facts,
)
from cnncli.modalities.audio.drawing import heatmap_png, spectrogram_png, thumbnail
from cnncli.modalities.audio.features import (
    FeatureExtractor,
    band_count,
    fit_length,
    frame_count,
    params_json,
    target_length,
)
from cnncli.modalities.audio.options import AudioAugment, AudioOptions, augment_problems, option_problems
from cnncli.modalities.audio.windows import sliding_windows
from cnncli.modalities.base import Encoded, Modality, ProgressCallback, finite_only, state_numbers, stem_picture

FEATURE_BATCH = 256  # recordings per feature call: large enough to amortise, small enough for memory
STATISTICS_CHUNK = 256  # recordings per float64 pass when fitting the normalisation


class BandNormalize(nn.Module):
    """(x - mean) / std per frequency band (row), with statistics stored as buffers."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 1, -1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


class AudioModality(Modality):
    name = "audio"
    extensions = AUDIO_EXTENSIONS
    options_type = AudioOptions
    augment_type = AudioAugment
    retired_options = {"cache": "the feature cache folder is --cache-dir or CNNCLI_CACHE_DIR (--no-cache: none)"}
    thumbnail_aspect = 2.0
    rows_upward = True

    def __init__(self, options: AudioOptions, augment: AudioAugment | None = None,
                 mean: list[float] | None = None, std: list[float] | None = None):
        for key, message in option_problems(options):
            raise CnncliError(f"data.audio.{key}: {message}")
        self.options = options
        self.augment_config = augment or AudioAugment()
        bands = band_count(options)
        self.mean = mean or [0.0] * bands
        self.std = std or [1.0] * bands
        self._extractor: FeatureExtractor | None = None
        self.cache_folder: Path | None = None

    @classmethod
    def from_config(cls, config: Any) -> "AudioModality":
        return cls(cls.options_from(config), cls.augment_from(config))

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
        return cls(options, None, state_numbers(state, "mean", bands), state_numbers(state, "std", bands))

    def state_dict(self) -> dict[str, Any]:
        return {"options": dataclasses.asdict(self.options), "mean": self.mean, "std": self.std}

    @property
    def shape_from_recipe(self) -> bool:
        return True

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, band_count(self.options), frame_count(self.options))

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

    def encode_many(self, samples: Sequence[Sample], progress: ProgressCallback | None = None) -> Encoded:
        """Cached features where present; the rest decoded one file at a time, transformed a batch at a time."""
        cache = FeatureCache(self.cache_folder, params_json(self.options))
        results: dict[int, torch.Tensor] = {}
        failures: dict[int, str] = {}
        for start in range(0, len(samples), FEATURE_BATCH):
            pending: list[tuple[int, str, torch.Tensor]] = []  # (position, cache key, waveform)
            for position in range(start, min(start + FEATURE_BATCH, len(samples))):
                locator = samples[position].locator
                try:
                    content = read_bytes(locator)
                    key = cache.key(content)
                    cached = cache.get(key)
                    if cached is not None and tuple(cached.shape) == self.input_shape:
                        results[position] = cached
                    else:
                        waveform = decode(locator, content, self.options.sample_rate)
                        pending.append((position, key, fit_length(waveform, target_length(self.options))))
                except CnncliError as error:
                    failures[position] = str(error)
            if pending:
                features = self.extractor(torch.stack([waveform for _, _, waveform in pending]))
                for (position, key, _), feature in zip(pending, features):
                    results[position] = feature
                    cache.put(key, feature)
            if progress:
                progress(min(start + FEATURE_BATCH, len(samples)) - start)
        index = sorted(results)
        tensor = torch.stack([results[i] for i in index]) if index else torch.empty((0, *self.input_shape))
        notes = [f"the feature cache could not be written ({len(cache.write_errors)} entries), e.g. "
                 f"{cache.write_errors[0]}"] if cache.write_errors else []
        return finite_only(Encoded(tensor, index, failures, notes), samples)

    def encode_windows(self, path: str, window: float, hop: float,
                       batch_size: int = 64) -> Iterator[tuple[list[tuple[float, float]], torch.Tensor]]:
        """Slide a `window`-second window by `hop` seconds over a long recording, streamed from
        the file (see cnncli.modalities.audio.windows)."""
        return sliding_windows(path, window, hop, self.options, self.extractor, batch_size)

    # -- fitting and the stem ------------------------------------------------------------------

    def fit_encoded(self, encoded: torch.Tensor) -> None:
        self.fit_encoded_chunks(encoded.split(STATISTICS_CHUNK))

    def fit_encoded_chunks(self, chunks) -> None:
        """Per-band mean and std over every training recording and frame, summed in float64 a
        chunk at a time, so memory stays flat for any number of recordings."""
        if not self.options.normalize:
            return
        bands = band_count(self.options)
        total = torch.zeros(bands, dtype=torch.float64)
        square = torch.zeros(bands, dtype=torch.float64)
        count = 0
        for chunk in chunks:
            for part in chunk.split(STATISTICS_CHUNK):
                values = part.to(torch.float64)
                total += values.sum(dim=(0, 1, 3))
                square += (values ** 2).sum(dim=(0, 1, 3))
                count += len(part) * part.shape[1] * part.shape[3]
        if count == 0:
            return
        mean = total / count
        variance = (square / count - mean ** 2).clamp(min=1e-8)
        self.mean = [round(float(m), 6) for m in mean]
        self.std = [round(float(s), 6) for s in variance.sqrt()]

    def build_stem(self) -> nn.Module:
        return BandNormalize(self.mean, self.std)

    # -- augmentation --------------------------------------------------------------------------

    def augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random time shift, gain, SpecAugment masks and noise on un-normalised dB spectrograms.

        gain_db is additive in the dB domain (a gain on the power spectrum), so for MFCC it moves
        only coefficient 0 (by gain * sqrt(n_mels), the orthonormal DCT of a constant). Masks are
        filled with the per-band training mean, i.e. zero after the stem. Noise std is in units of
        the normalised spectrogram, so it is scaled by each band's std here.
        """
        settings = self.augment_config
        if not any((settings.time_shift, settings.time_mask, settings.freq_mask, settings.gain_db, settings.noise)):
            return batch
        batch = batch.float().clone()
        count, _, bands, frames = batch.shape
        device = batch.device
        mean = torch.tensor(self.mean, device=device).view(1, 1, -1, 1)
        std = torch.tensor(self.std, device=device).view(1, 1, -1, 1)

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(count, generator=generator, device=device)

        if settings.time_shift:
            widest = settings.time_shift * frames
            shift = uniform(-widest, widest).round().long()
            columns = (torch.arange(frames, device=device).view(1, -1) - shift.view(-1, 1)) % frames
            batch = batch.gather(3, columns.view(count, 1, 1, frames).expand(-1, 1, bands, -1))
        if settings.gain_db:
            gain = uniform(-settings.gain_db, settings.gain_db).view(-1, 1, 1)
            if self.options.features == "mfcc":
                batch[:, :, 0, :] += gain * math.sqrt(self.options.n_mels)
            else:
                batch += gain.view(-1, 1, 1, 1)
        fill = mean.expand(count, 1, bands, frames) if self.options.normalize else \
            batch.mean(dim=(2, 3), keepdim=True).expand(-1, 1, bands, frames)
        for width, size, axis in ((settings.freq_mask, bands, 2), (settings.time_mask, frames, 3)):
            if width:
                mask = _random_stripes(count, width, size, generator, device)
                shape = (count, 1, size, 1) if axis == 2 else (count, 1, 1, size)
                batch = torch.where(mask.view(shape), fill, batch)
        if settings.noise:
            noise = torch.randn(batch.shape, generator=generator, device=device)
            batch = batch + noise * settings.noise * std
        return batch

    # -- describing and drawing ----------------------------------------------------------------

    def describe(self) -> str:
        options = self.options
        _, bands, frames = self.input_shape
        f_max = options.f_max or options.sample_rate / 2
        kind = {"logmel": f"{options.n_mels} mel bands {options.f_min:g}-{f_max:g} Hz (Slaney), dB",
                "stft": f"{bands} linear bands 0-{options.sample_rate / 2:g} Hz, dB",
                "mfcc": f"{options.n_mfcc} MFCCs of {options.n_mels} mel bands {options.f_min:g}-{f_max:g} Hz"}
        top_db = f", top_db {options.top_db:g}" if options.top_db is not None else ""
        norm = "per-band normalisation" if options.normalize else "no normalisation"
        return (f"audio {options.features} 1x{bands}x{frames}: {options.sample_rate} Hz mono, "
                f"{options.duration:g} s pad/centre-crop, n_fft {options.n_fft} hop {options.hop_length} "
                f"win {options.win_length or options.n_fft}, {kind[options.features]}{top_db}, {norm}")

    def preprocessing(self) -> dict[str, Any]:
        """For a server: the waveform and spectrogram parameters that make the encoded dB picture;
        the network normalises each band itself."""
        options = self.options
        spectrogram = {"n_fft": options.n_fft, "hop_length": options.hop_length,
                       "win_length": options.win_length or options.n_fft, "window": "periodic Hann",
                       "center": True, "pad_mode": "constant (zeros)", "power": 2.0}
        if options.features != "stft":
            spectrogram.update(n_mels=options.n_mels, f_min=options.f_min,
                               f_max=options.f_max or options.sample_rate / 2, mel_scale="slaney", mel_norm="slaney")
        if options.features == "mfcc":
            spectrogram.update(n_mfcc=options.n_mfcc, dct="type II, orthonormal, of the dB mel bands")
        return {"steps": ["decode the audio file", "mix to mono (mean of the channels)",
                          f"resample to {options.sample_rate} Hz (windowed sinc, as torchaudio.functional.resample)",
                          f"centre-crop or zero-pad both sides to {target_length(options)} samples",
                          f"{options.features} power spectrogram (librosa's conventions)",
                          "decibels: 10 log10(max(power, 1e-10)), floored at top_db below each recording's peak",
                          "shape (1, bands, frames), row 0 the lowest band"],
                "sample_rate": options.sample_rate, "duration": options.duration, "features": options.features,
                "spectrogram": spectrogram, "top_db": options.top_db, "mean": self.mean, "std": self.std,
                "normalization": "inside the graph: (decibels - mean) / std per band"}

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
        picture = stem_picture(network, encoded) if network is not None else encoded.float()
        waveform = fit_length(decode(sample.locator, read_bytes(sample.locator), self.options.sample_rate),
                              target_length(self.options))
        thumbnail(axis, picture[0].numpy(), waveform, self.options)

    def measure(self, sample: Sample) -> dict[str, Any]:
        """Duration, sample rate and channels as stored, after a full decode."""
        return recording_facts(sample.locator)


def _random_stripes(count: int, widest: int, size: int, generator: torch.Generator, device) -> torch.Tensor:
    """(count, size) bool: one stripe per row, width uniform in [0, widest], start uniform."""
    widest = min(widest, size)
    width = (torch.rand(count, generator=generator, device=device) * (widest + 1)).floor().long()
    start = (torch.rand(count, generator=generator, device=device) * (size - width + 1)).floor().long()
    positions = torch.arange(size, device=device).view(1, -1)
    return (positions >= start.view(-1, 1)) & (positions < (start + width).view(-1, 1))
