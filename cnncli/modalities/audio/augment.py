"""Training-time augmentation of audio batches, seeded by the training loop's generator.

Two stages. On waveforms (bundles that encode waveforms): speed, time shift, noise mixed at a
random signal-to-noise ratio (synthetic coloured noise, or segments of the recordings in
`augment.background`; a share of it tonal beds, `noise_tonal`; its level moving across the row,
`noise_swell_db`), gain. Then the features are computed (stretched in time for `tempo`,
warped in frequency for `pitch`, with a random equaliser for `eq_db`), and on the spectrogram: SpecAugment masks and
Gaussian noise. Every random value is drawn from the generator in a fixed order, one per row,
so a batch's augmentation depends only on the generator's state: the same seed gives the same
training, and a resumed run continues exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from cnncli.data.sources import expand_paths
from cnncli.errors import CnncliError
from cnncli.modalities.audio.decoding import AUDIO_EXTENSIONS, decode, read_bytes
from cnncli.modalities.audio.features import Spectrogram
from cnncli.modalities.audio.options import AudioAugment, AudioOptions
from cnncli.modalities.audio.waveforms import (
    change_speed,
    coloured_noise,
    mix_at_snr,
    roll,
    stretch_time,
    swell,
    tonal_beds,
    warp_frequencies,
)

NOISE_EXPONENTS = (0.0, 2.0)  # spectral slopes of synthetic noise: white to brown
EQ_TERMS = 3  # cosines in a random equaliser curve


def waveform_augmenting(settings: AudioAugment) -> bool:
    return bool(settings.speed or settings.time_shift or settings.noise_snr or settings.gain_db or settings.pitch
                or settings.eq_db or settings.tempo)


def spectrogram_augmenting(settings: AudioAugment) -> bool:
    return bool(settings.time_mask or settings.freq_mask or settings.noise)


class BackgroundNoise:
    """Noise recordings at the recipe's rate, end to end in one tensor; random segments of it."""

    def __init__(self, folder: str | Path, sample_rate: int):
        files = [sample.locator for sample in expand_paths([str(folder)], AUDIO_EXTENSIONS)] \
            if Path(folder).is_dir() else []
        if not files:
            raise CnncliError(f"augment.background: {folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) there")
        self.waveform = torch.cat([decode(path, read_bytes(path), sample_rate) for path in sorted(files)])
        self.files = len(files)

    def segments(self, count: int, length: int, generator: torch.Generator, device) -> torch.Tensor:
        """(count, length) segments starting at random places (wrapping round the end)."""
        if self.waveform.device != torch.device(device):
            self.waveform = self.waveform.to(device)
        total = len(self.waveform)
        starts = (torch.rand(count, generator=generator, device=device) * total).long()
        index = (starts.view(-1, 1) + torch.arange(length, device=device).view(1, -1)) % total
        return self.waveform[index]


def augment_waveforms(waveforms: torch.Tensor, settings: AudioAugment, sample_rate: int,
                      generator: torch.Generator, background: BackgroundNoise | None = None) -> torch.Tensor:
    """(N, samples) -> (N, samples): speed, time shift, noise at a random SNR, gain, in that order."""
    count, length = waveforms.shape
    device = waveforms.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=generator, device=device)

    if settings.speed:
        waveforms = change_speed(waveforms, uniform(1 - settings.speed, 1 + settings.speed))
    if settings.time_shift:
        widest = settings.time_shift * length
        waveforms = roll(waveforms, uniform(-widest, widest).round().long())
    if settings.noise_snr:
        snr = uniform(*settings.noise_snr)
        chosen = torch.rand(count, generator=generator, device=device) < settings.noise_prob
        if background is not None:
            noise = background.segments(count, length, generator, device)
        else:
            noise = coloured_noise(count, length, uniform(*NOISE_EXPONENTS), generator)
        if settings.noise_tonal:
            tonal = torch.rand(count, generator=generator, device=device) < settings.noise_tonal
            noise = torch.where(tonal.view(-1, 1), tonal_beds(count, length, sample_rate, generator, device,
                                                              tonal & chosen), noise)
        if settings.noise_swell_db:
            noise = swell(noise, uniform(-settings.noise_swell_db, settings.noise_swell_db))
        waveforms = torch.where(chosen.view(-1, 1), mix_at_snr(waveforms, noise, snr, sample_rate), waveforms)
    if settings.gain_db:
        waveforms = waveforms * (10 ** (uniform(-settings.gain_db, settings.gain_db) / 20)).view(-1, 1)
    return waveforms


def spectrograms_of(waveforms: torch.Tensor, features: Spectrogram, settings: AudioAugment,
                    generator: torch.Generator) -> torch.Tensor:
    """(N, samples) -> (N, 1, bands, frames) features, each row stretched in time by up to
    `tempo` (a slower or faster speaker, same pitch), its frequencies warped by up to +- `pitch`
    (same tempo, higher or lower voice) and shaped by a random smooth equaliser curve of up to
    +- `eq_db` (another microphone)."""
    with torch.no_grad():
        if not (settings.tempo or settings.pitch or settings.eq_db):
            return features(waveforms)
        count, device = len(waveforms), waveforms.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(count, generator=generator, device=device)

        power = features.power(waveforms)
        if settings.tempo:  # log-uniform: as likely 1.3 times as long as 1 / 1.3
            widest = math.log(1 + settings.tempo)
            power = stretch_time(power, uniform(-widest, widest).exp())
        if settings.pitch:
            power = warp_frequencies(power, 1 + uniform(-settings.pitch, settings.pitch))
        if settings.eq_db:
            power = power * 10 ** (equaliser_curves(count, power.shape[1], settings.eq_db, generator, device) / 10)
        return features.from_power(power)


def equaliser_curves(count: int, bins: int, widest_db: float, generator: torch.Generator, device) -> torch.Tensor:
    """(count, bins, 1) dB: a sum of three cosines over the band (a tilt, a bump, a ripple) with
    random amplitudes and phases, never beyond +- widest_db."""
    orders = torch.arange(1, EQ_TERMS + 1, device=device, dtype=torch.float32)
    amplitudes = (2 * torch.rand(count, EQ_TERMS, generator=generator, device=device) - 1) / orders
    phases = 2 * math.pi * torch.rand(count, EQ_TERMS, generator=generator, device=device)
    position = torch.linspace(0, 1, bins, device=device).view(1, -1, 1)
    terms = amplitudes.unsqueeze(1) * torch.cos(math.pi * orders * position + phases.unsqueeze(1))
    return (widest_db / float((1 / orders).sum()) * terms.sum(dim=2)).unsqueeze(2)


def augment_spectrograms(batch: torch.Tensor, settings: AudioAugment, options: AudioOptions, mean: torch.Tensor,
                         std: torch.Tensor, generator: torch.Generator, gain: bool = True) -> torch.Tensor:
    """Random time shift, gain, SpecAugment masks and noise on un-normalised dB spectrograms.

    gain_db is additive in the dB domain (a gain on the power spectrum), so for MFCC it moves
    only coefficient 0 (by gain * sqrt(n_mels), the orthonormal DCT of a constant). Masks are
    filled with the per-band training mean, i.e. zero after the stem. Noise std is in units of
    the normalised spectrogram, so it is scaled by each band's std here. With `gain` False
    (the waveform stage did shift and gain), only masks and noise are applied.
    """
    batch = batch.float().clone()
    count, _, bands, frames = batch.shape
    device = batch.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=generator, device=device)

    if settings.time_shift and gain:
        widest = settings.time_shift * frames
        shift = uniform(-widest, widest).round().long()
        columns = (torch.arange(frames, device=device).view(1, -1) - shift.view(-1, 1)) % frames
        batch = batch.gather(3, columns.view(count, 1, 1, frames).expand(-1, 1, bands, -1))
    if settings.gain_db and gain:
        offset = uniform(-settings.gain_db, settings.gain_db).view(-1, 1, 1)
        if options.features == "mfcc":
            batch[:, :, 0, :] += offset * math.sqrt(options.n_mels)
        else:
            batch += offset.view(-1, 1, 1, 1)
    fill = mean.expand(count, 1, bands, frames) if options.normalize else \
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


def _random_stripes(count: int, widest: int, size: int, generator: torch.Generator, device) -> torch.Tensor:
    """(count, size) bool: one stripe per row, width uniform in [0, widest], start uniform."""
    widest = min(widest, size)
    width = (torch.rand(count, generator=generator, device=device) * (widest + 1)).floor().long()
    start = (torch.rand(count, generator=generator, device=device) * (size - width + 1)).floor().long()
    positions = torch.arange(size, device=device).view(1, -1)
    return (positions >= start.view(-1, 1)) & (positions < (start + width).view(-1, 1))
