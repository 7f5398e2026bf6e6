"""Batched transforms of waveforms and spectrograms for training-time augmentation.

Each function takes a whole batch, one random value per row already drawn by the caller, and
works on the batch's device, so augmentation stays one pass of tensor operations per batch.
"""

from __future__ import annotations

import math

import torch

SINC_TAPS = 8  # zero crossings on each side of the resampling kernel (stop band about -50 dB)
ANTI_ALIAS = 0.95  # cutoff as a share of the output's Nyquist frequency, leaving the kernel room to roll off
ACTIVE_FRAME_SECONDS = 0.016  # frames over which the loudness of speech is measured
ACTIVE_RANGE_DB = 30.0  # frames this far below the loudest frame count as pauses, not speech


def change_speed(waveforms: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Play row i `factors[i]` times faster (tempo and pitch together, like Kaldi's speed
    perturbation), around the centre of the row, keeping its length.

    Band-limited interpolation: each output sample is a Hann-windowed sinc sum of the input
    around its source position, the sinc narrowed by the factor when the row is sped up, so
    nothing folds back over the Nyquist frequency."""
    count, length = waveforms.shape
    centre = (length - 1) / 2
    times = torch.arange(length, device=waveforms.device, dtype=torch.float32).view(1, -1)
    source = centre + (times - centre) * factors.view(-1, 1)  # fractional input position of each output
    base = source.floor()
    fraction = source - base
    cutoff = torch.where(factors > 1, ANTI_ALIAS / factors, 1.0).view(-1, 1)
    # sin and cos of the fraction once; each tap's sinc and window follow by the angle-sum rule.
    sinc_sin, sinc_cos = torch.sin(math.pi * cutoff * fraction), torch.cos(math.pi * cutoff * fraction)
    window_sin = torch.sin(math.pi * fraction / SINC_TAPS)
    window_cos = torch.cos(math.pi * fraction / SINC_TAPS)
    # Zeros on both sides stand for the silence beyond the row; positions further out land on them.
    padded = torch.nn.functional.pad(waveforms, (SINC_TAPS, SINC_TAPS))
    start = base.long() + SINC_TAPS
    output = torch.zeros_like(waveforms)
    for tap in range(-SINC_TAPS + 1, SINC_TAPS + 1):
        distance = fraction - tap
        angle = math.pi * cutoff * tap
        sine = sinc_sin * torch.cos(angle) - sinc_cos * torch.sin(angle)  # sin(pi c (fraction - tap))
        sinc = torch.where(distance.abs() < 1e-6, cutoff, sine / (math.pi * distance))
        window = 0.5 * (1 + window_cos * math.cos(math.pi * tap / SINC_TAPS)
                        + window_sin * math.sin(math.pi * tap / SINC_TAPS))
        output += padded.gather(1, (start + tap).clamp(0, length + 2 * SINC_TAPS - 1)) * (sinc * window)
    return output


def roll(waveforms: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift row i circularly right by `shifts[i]` samples (an integer tensor)."""
    length = waveforms.shape[-1]
    columns = (torch.arange(length, device=waveforms.device).view(1, -1) - shifts.view(-1, 1)) % length
    return waveforms.gather(1, columns)


def active_power(waveforms: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(N,) mean power of each row over its sounding frames: those within ACTIVE_RANGE_DB of the
    row's loudest frame. A word padded with silence has the same level as the word alone, so a
    signal-to-noise ratio means the same whatever the padding."""
    count, length = waveforms.shape
    frame = max(1, min(length, round(ACTIVE_FRAME_SECONDS * sample_rate)))
    frames = waveforms[:, :length // frame * frame].reshape(count, -1, frame)
    energy = frames.pow(2).mean(dim=2)
    loudest = energy.amax(dim=1, keepdim=True)
    active = energy >= loudest * 10 ** (-ACTIVE_RANGE_DB / 10)
    return (energy * active).sum(dim=1) / active.sum(dim=1).clamp(min=1)


def coloured_noise(count: int, length: int, exponents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(count, length) noise of unit power whose spectrum falls as 1 / f ** exponents[i]
    (0 white, 1 pink, 2 brown): hiss, fans, rumble and room tone span that range."""
    device = exponents.device
    white = torch.randn(count, length, generator=generator, device=device)
    spectrum = torch.fft.rfft(white)
    bins = torch.arange(spectrum.shape[1], device=device, dtype=torch.float32).clamp(min=1.0)
    shape = bins.view(1, -1).pow(-exponents.view(-1, 1) / 2)
    shape[:, 0] = 0.0  # no constant offset
    noise = torch.fft.irfft(spectrum * shape, n=length)
    return noise / noise.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=1e-12)


TONES = 3  # notes sounding at once in a tonal bed
HARMONICS = 6  # partials of each note
FUNDAMENTALS_HZ = (50.0, 1000.0)  # mains hum to a soprano's top note, log-uniform


def tonal_beds(count: int, length: int, sample_rate: int, generator: torch.Generator, device,
               rows: torch.Tensor) -> torch.Tensor:
    """(count, length) beds of unit power in `rows` (zeros elsewhere): a chord of TONES notes,
    each a fundamental with HARMONICS partials falling as 1 / h ** r (r from 0.5, bright, to 2,
    mellow), changing to another chord once, at a random point. A music bed, mains hum and its
    buzz, a whistle: sound whose energy sits in a few lines, which broadband noise never is. The
    random values are drawn for every row, so a row's bed does not depend on which rows have one."""
    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device)

    low, high = (math.log(hz) for hz in FUNDAMENTALS_HZ)
    fundamentals = (low + (high - low) * draw(count, 2, TONES)).exp()  # the chord before and after the change
    loudness, rolloff = draw(count, 2, TONES), 0.5 + 1.5 * draw(count, 1, 1)
    phases, change = 2 * math.pi * draw(count, 2, TONES, HARMONICS), draw(count)
    chosen = rows.nonzero().flatten()
    beds = torch.zeros(count, length, device=device)
    if not len(chosen):
        return beds
    time = torch.arange(length, device=device, dtype=torch.float32) / sample_rate
    chords = torch.zeros(len(chosen), 2, length, device=device)
    for tone in range(TONES):
        for harmonic in range(1, HARMONICS + 1):
            frequency = fundamentals[chosen, :, tone] * harmonic
            amplitude = loudness[chosen, :, tone] / harmonic ** rolloff[chosen, :, 0] * (frequency < sample_rate / 2)
            angle = 2 * math.pi * frequency.unsqueeze(2) * time + phases[chosen, :, tone, harmonic - 1].unsqueeze(2)
            chords += amplitude.unsqueeze(2) * torch.sin(angle)
    before = torch.arange(length, device=device).view(1, -1) < (change[chosen] * length).view(-1, 1)
    bed = torch.where(before, chords[:, 0], chords[:, 1])
    beds[chosen] = bed / bed.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=1e-12)
    return beds


def swell(noise: torch.Tensor, change_db: torch.Tensor) -> torch.Tensor:
    """Row i's level moving evenly (in dB) by `change_db[i]` from its start to its end, about its
    middle: noise that fades in or out, a fan spinning up."""
    position = torch.linspace(-0.5, 0.5, noise.shape[1], device=noise.device).view(1, -1)
    return noise * 10 ** (change_db.view(-1, 1) * position / 20)


def mix_at_snr(waveforms: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Add each row's noise (scaled) so that the row's speech stands `snr_db[i]` dB above it.
    Rows of silence stay silent; noise rows of silence add nothing."""
    noise_power = noise.pow(2).mean(dim=1)
    scale = (active_power(waveforms, sample_rate) / 10 ** (snr_db / 10) / noise_power.clamp(min=1e-20)).sqrt()
    return waveforms + noise * torch.where(noise_power > 0, scale, 0.0).view(-1, 1)


def warp_frequencies(power: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """(N, bins, frames) power spectrogram with row i's frequency axis stretched by `factors[i]`
    (content at f moves to f * factor): a higher or lower voice at the same tempo. Bins whose
    source lies past the top are empty."""
    bins = power.shape[1]
    source = torch.arange(bins, device=power.device, dtype=torch.float32).view(1, -1) / factors.view(-1, 1)
    low = source.floor().long()
    fraction = (source - low).unsqueeze(2)
    frames = power.shape[2]

    def at(index: torch.Tensor) -> torch.Tensor:
        return power.gather(1, index.clamp(max=bins - 1).unsqueeze(2).expand(-1, -1, frames))

    warped = at(low) * (1 - fraction) + at(low + 1) * fraction
    return torch.where((source <= bins - 1).unsqueeze(2), warped, 0.0)


def stretch_time(power: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """(N, bins, frames) power spectrogram with row i lasting `factors[i]` times as long around its
    centre frame, frequencies kept (a slower or faster speaker). Frames whose source lies outside
    the row are empty."""
    frames = power.shape[2]
    centre = (frames - 1) / 2
    positions = torch.arange(frames, device=power.device, dtype=torch.float32).view(1, -1)
    source = centre + (positions - centre) / factors.view(-1, 1)
    low = source.floor().long()
    fraction = (source - low).unsqueeze(1)
    bins = power.shape[1]

    def at(index: torch.Tensor) -> torch.Tensor:
        return power.gather(2, index.clamp(0, frames - 1).unsqueeze(1).expand(-1, bins, -1))

    stretched = at(low) * (1 - fraction) + at(low + 1) * fraction
    return torch.where(((source >= 0) & (source <= frames - 1)).unsqueeze(1), stretched, 0.0)
