"""The `data.audio` recipe section and the audio `augment` keys."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from cnncli.limits import AUDIO_RATES, MAX_AUDIO_SECONDS

MAX_FFT = 2 ** 16  # frames of one STFT window (4 s at 16 kHz)
MAX_BANDS = 4096


@dataclass
class AudioOptions:
    """`data.audio`: how a recording becomes a time x frequency picture."""

    sample_rate: int = 16000  # every recording is resampled to this rate and mixed to mono
    features: Literal["logmel", "stft", "mfcc"] = "logmel"
    n_fft: int = 512
    hop_length: int = 128
    win_length: int | None = None  # None = n_fft
    n_mels: int = 64
    n_mfcc: int = 40
    f_min: float = 0.0
    f_max: float | None = None  # None = sample_rate / 2
    top_db: float | None = 80.0  # dynamic range kept below each spectrogram's peak
    # absolute: dB re full scale; peak: dB below each spectrogram's loudest cell (librosa's ref=np.max),
    # so the level of a recording (microphone gain, distance) does not change its picture (above the
    # floor of -100 dB re full scale that both share)
    level: Literal["absolute", "peak"] = "absolute"
    duration: float = 1.0  # seconds: shorter recordings are padded, longer ones centre-cropped
    # subtract each recording's (window's, event's) mean before padding: a sound card's DC offset is
    # not part of the sound, and left in it lights the lowest band and clicks where padding begins
    remove_dc: bool = True
    normalize: bool = True  # per-band mean/std fitted on the training split
    # (`cache`, the feature cache folder, was a key here; the folder is now the user's: cnncli.files.cache)
    # `predict --segment`: how the sounds of a long recording are found (see audio/events.py)
    event_threshold_db: float = 10.0  # a sound stands this many dB above the recording's noise floor
    event_min_gap: float = 0.3  # seconds: sounds separated by a shorter pause are one sound
    event_min_length: float = 0.1  # seconds: shorter sounds (clicks) are not events


@dataclass
class AudioAugment:
    """The `augment` keys of audio."""

    time_shift: float = 0.0  # random circular shift, as a fraction of the duration
    time_mask: int = 0  # SpecAugment, widest time mask in frames (0 = off)
    freq_mask: int = 0  # SpecAugment, widest frequency mask in bands (0 = off)
    gain_db: float = 0.0  # random gain, +- dB
    noise: float = 0.0  # Gaussian noise on the normalised spectrogram, std
    # On the waveform, before the features (bundles that encode waveforms; see AudioModality):
    noise_snr: list[float] | None = None  # [low, high] dB: noise mixed under the sound at a random SNR
    noise_prob: float = 1.0  # share of training rows that get that noise (the rest stay as recorded)
    noise_tonal: float = 0.0  # share of that noise made of chords of harmonic tones (music, hum) instead
    noise_swell_db: float = 0.0  # the noise's level moves by up to +- this many dB across a row (fades)
    background: str | None = None  # folder of noise recordings (relative to data.root) mixed instead of
    #                                synthetic coloured noise (white to brown, random slope)
    speed: float = 0.0  # play faster or slower by up to +- this share (tempo and pitch, by resampling)
    tempo: float = 0.0  # last up to (1 + tempo) times as long or as short, keeping the pitch (speaking rate)
    pitch: float = 0.0  # move the frequencies up or down by up to +- this share, keeping the tempo
    eq_db: float = 0.0  # random smooth equaliser curve, up to +- this many dB (another microphone or room)
    background_class: float = 0.0  # add a "background" class: this many noise-only rows per training row


def option_problems(options: AudioOptions) -> list[tuple[str, str]]:
    """(key, what is wrong) for each `data.audio` value out of its range."""
    nyquist = options.sample_rate / 2
    low, high = AUDIO_RATES
    checks = [
        ("sample_rate", low <= options.sample_rate <= high, f"must be from {low:,} to {high:,} Hz"),
        ("n_fft", 2 <= options.n_fft <= MAX_FFT, f"must be from 2 to {MAX_FFT:,}"),
        ("hop_length", 1 <= options.hop_length <= MAX_FFT, f"must be from 1 to {MAX_FFT:,}"),
        ("win_length", options.win_length is None or 1 <= options.win_length <= options.n_fft,
         f"must be between 1 and n_fft ({options.n_fft})"),
        ("n_mels", 1 <= options.n_mels <= MAX_BANDS, f"must be from 1 to {MAX_BANDS:,}"),
        ("n_mfcc", options.features != "mfcc" or 1 <= options.n_mfcc <= options.n_mels,
         f"must be between 1 and n_mels ({options.n_mels})"),
        ("f_min", 0 <= options.f_min < (options.f_max or nyquist), "must be at least 0 and below f_max"),
        ("f_max", options.f_max is None or options.f_max <= nyquist,
         f"must be at most sample_rate / 2 ({nyquist:g})"),
        ("top_db", options.top_db is None or options.top_db > 0, "must be positive (or null to keep all)"),
        ("duration", 0 < options.duration <= MAX_AUDIO_SECONDS, f"must be from 0 to {MAX_AUDIO_SECONDS:,} seconds"),
        ("event_threshold_db", options.event_threshold_db > 0, "must be positive dB"),
        ("event_min_gap", options.event_min_gap >= 0, "must be at least 0 seconds"),
        ("event_min_length", options.event_min_length >= 0, "must be at least 0 seconds"),
    ]
    problems = [(key, message) for key, ok, message in checks if not ok]
    empty = 0 if problems or options.features == "stft" else empty_mel_bands(options)
    if empty:  # an all-zero filter makes a band of silence in every picture (-100 dB, or NaN once normalised)
        bins = options.n_fft // 2 + 1
        problems.append(("n_mels", f"{empty} of the {options.n_mels} mel bands would be empty: n_fft {options.n_fft} "
                                   f"gives {bins} frequency bins up to {nyquist:g} Hz, too few between f_min and "
                                   "f_max for that many bands; use fewer mel bands or a larger n_fft"))
    return problems


def empty_mel_bands(options: AudioOptions) -> int:
    """How many mel filters would get no frequency bin: filter m spans (f[m], f[m + 2]) of the
    n_mels + 2 points spaced evenly in mels from f_min to f_max, and is zero at every bin outside.
    Computed as torchaudio's melscale_fbanks builds the filters (the Slaney scale, float32, bins
    at linspace(0, sample_rate // 2)), by counting bins instead of making the bins x bands matrix."""
    import torch  # here: the recipe schema reads this module, and `cnncli --help` must not wait for torch

    width, step = 200.0 / 3, math.log(6.4) / 27.0  # the Slaney scale: linear to 1 kHz, logarithmic above
    knee = 1000.0 / width  # 1 kHz in mels

    def to_mel(hertz: float) -> float:
        return hertz / width if hertz < 1000.0 else knee + math.log(hertz / 1000.0) / step

    mels = torch.linspace(to_mel(options.f_min), to_mel(options.f_max or options.sample_rate / 2), options.n_mels + 2)
    points = torch.where(mels >= knee, 1000.0 * torch.exp(step * (mels - knee)), width * mels)
    bins = torch.linspace(0, options.sample_rate // 2, options.n_fft // 2 + 1)
    above = torch.searchsorted(bins, points[:-2], right=True)  # the first bin past each filter's start
    below = torch.searchsorted(bins, points[2:], right=False)  # the first bin at or past its end
    return int((below <= above).sum())


def augment_problems(augment: AudioAugment) -> list[tuple[str, str]]:
    """(key, what is wrong) for each audio `augment` value out of its range."""
    snr = augment.noise_snr
    checks = [
        ("time_shift", 0 <= augment.time_shift <= 1, "must be a fraction from 0 to 1"),
        ("time_mask", augment.time_mask >= 0, "must be 0 (off) or more frames"),
        ("freq_mask", augment.freq_mask >= 0, "must be 0 (off) or more bands"),
        ("gain_db", 0 <= augment.gain_db <= 120, "must be from 0 to 120 dB"),
        ("noise", augment.noise >= 0, "must be 0 (off) or more"),
        ("noise_snr", snr is None or (len(snr) == 2 and snr[0] <= snr[1]), "must be [low, high] in dB, low <= high"),
        ("noise_prob", 0 <= augment.noise_prob <= 1, "must be between 0 and 1"),
        ("noise_tonal", 0 <= augment.noise_tonal <= 1, "must be between 0 and 1 (a share of the noisy rows)"),
        ("noise_swell_db", 0 <= augment.noise_swell_db <= 60, "must be from 0 to 60 dB"),
        ("noise_tonal", not augment.noise_tonal or snr is not None, "needs augment.noise_snr (how loud the noise is)"),
        ("noise_swell_db", not augment.noise_swell_db or snr is not None,
         "needs augment.noise_snr (how loud the noise is)"),
        ("speed", 0 <= augment.speed < 1, "must be at least 0 and below 1 (a share of the speed)"),
        ("pitch", 0 <= augment.pitch < 1, "must be at least 0 and below 1 (a share of the frequency)"),
        ("eq_db", augment.eq_db >= 0, "must be at least 0 dB"),
        ("tempo", 0 <= augment.tempo <= 1, "must be between 0 and 1 (1: twice as long or half)"),
        ("background_class", augment.background_class >= 0, "must be at least 0 (rows per training row)"),
        ("background", augment.background is None or augment.noise_snr is not None or augment.background_class > 0,
         "needs augment.noise_snr or augment.background_class, which say how the noise is used"),
    ]
    return [(key, message) for key, ok, message in checks if not ok]
