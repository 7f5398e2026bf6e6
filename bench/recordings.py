r"""Long recordings of every kind `predict --segment` meets, built from FSDD digits, truth from construction.

Each kind puts one held-out speaker's digits, 0.6 to 1.4 s apart, over a background of its own;
the truth is where each word is (its clip's frames within 40 dB of the clip's loudest) and which
digit it is. Kinds (`KINDS`; each at its own rate and channels, and `formats` at all of them):

- steady: pink noise, 50 Hz hum and a slow +-3 dB swell at -50 dBFS; digits 10-30 dB above it
  (the recording bench/long_recording.py always built)
- gated: the clips gated as an editor or a gated microphone leaves them (their quiet frames
  replaced by near-digital silence at -80 dBFS) and cut into steady room noise at -56 dBFS that
  stops under each clip: the recording has two quiet levels, 25 dB apart
- fades: noise that fades in from -80 to -50 dBFS, a fan switched on 15 dB louder for a third of
  the file and off again, then a fade out; digits 10-30 dB above the noise where they are
- hum50, hum60: mains hum (a buzz with harmonics) at -35 dBFS over faint noise; digits 10-30 dB
  above the hum
- clicks: steady noise at -55 dBFS with clicks (2 ms, 30 dB above the noise) and door-like
  thumps (a 40-90 Hz body with a knock, 35 dB above the noise) in the pauses; neither is a word
- music: a quiet music bed (chords of sines with harmonics, a new chord every 1.5 to 3 s, each
  struck and decaying) at -45 dBFS; digits 10-30 dB above it
- snr: steady pink noise at -50 dBFS; digits at 0 to 30 dB SNR (`snr_db` in the truth)
- formats: the steady recording at 8, 16, 22.05 and 44.1 kHz, mono and stereo (8 files)

SNR is the word's power (its frames within 30 dB of its loudest) over the background's power
where the word is. Every recording is written as 16-bit PCM.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile

GAP_SECONDS = (0.6, 1.4)
WORD_RANGE_DB = 40.0  # a word's truth spans its clip's frames within this of its loudest
FORMATS = [(8000, 1), (8000, 2), (16000, 1), (16000, 2), (22050, 1), (22050, 2), (44100, 1), (44100, 2)]
# kind -> (rate, channels)
KINDS = {"steady": (44100, 2), "gated": (44100, 2), "fades": (16000, 1), "hum50": (8000, 1),
         "hum60": (22050, 2), "clicks": (16000, 2), "music": (44100, 1), "snr": (16000, 1)}


def speaker_digits(folder: Path, speaker: str, count: int, seed: int) -> list[tuple[Path, str]]:
    """`count` of the speaker's recordings in a seeded order, with their labels."""
    files = sorted(folder.glob(f"*_{speaker}_*.wav"))
    if not files:
        raise SystemExit(f"{folder}: no recordings of speaker {speaker!r}")
    order = np.random.default_rng(seed).permutation(len(files))
    return [(files[i], re.match(r"^(\d)_", files[i].name).group(1)) for i in order[:count]]


def resampled(path: Path, rate: int) -> np.ndarray:
    import torch
    import torchaudio.functional as audio_functional

    audio, native = soundfile.read(path, dtype="float32")
    audio = audio if audio.ndim == 1 else audio.mean(axis=1)
    audio = audio - audio.mean()
    return audio_functional.resample(torch.from_numpy(audio), native, rate).numpy().astype(np.float64)


def frame_power(waveform: np.ndarray, rate: int, seconds: float = 0.01) -> np.ndarray:
    frame = max(1, round(seconds * rate))
    return (waveform[:len(waveform) // frame * frame].reshape(-1, frame) ** 2).mean(axis=1) + 1e-20


def speech_power(waveform: np.ndarray, rate: int) -> float:
    """Mean power over the frames within 30 dB of the loudest (the word, not its pauses)."""
    energy = frame_power(waveform, rate, 0.016)
    return float(energy[energy >= energy.max() * 1e-3].mean())


def word_extent(waveform: np.ndarray, rate: int) -> tuple[float, float]:
    """(start s, end s) of the clip's frames within WORD_RANGE_DB of its loudest."""
    energy = frame_power(waveform, rate)
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (-WORD_RANGE_DB / 10))
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


def pink(length: int, generator: np.random.Generator) -> np.ndarray:
    """Unit-power pink noise."""
    spectrum = np.fft.rfft(generator.standard_normal(length))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    spectrum[0] = 0
    signal = np.fft.irfft(spectrum, n=length)
    return signal / np.sqrt(np.mean(signal ** 2))


def unit(signal: np.ndarray) -> np.ndarray:
    return signal / np.sqrt(np.mean(signal ** 2))


def db(value: float) -> float:
    return 10 ** (value / 20)


# -- backgrounds: (length, rate, generator) -> (mono background, a level track in dB per sample or None)

def steady(length: int, rate: int, generator: np.random.Generator, level_dbfs: float = -50.0) -> np.ndarray:
    """Pink noise, 50 Hz hum with two harmonics, a slow +-3 dB swell (the original bench's room)."""
    time = np.arange(length) / rate
    hum = sum(np.sin(2 * np.pi * 50 * k * time + k) / k for k in (1, 2, 3)) * 0.3
    swell = 10 ** (3 * np.sin(2 * np.pi * time / 7.0) / 20)
    return unit((pink(length, generator) + hum) * swell) * db(level_dbfs)


def fades(length: int, rate: int, generator: np.random.Generator) -> np.ndarray:
    """Fade in over 10 s (-80 to -50 dBFS), a fan 15 dB louder from a third to two thirds of the
    file (switched on and off in 0.3 s), a fade out over the last 10 s."""
    time = np.arange(length) / rate
    total = length / rate
    level = np.full(length, -50.0)
    level = np.minimum(level, -80 + 30 * time / 10.0)
    level = np.minimum(level, -80 + 30 * (total - time) / 10.0)
    noise = pink(length, generator) * 10 ** (level / 20)
    fan_on = np.clip((time - total / 3) / 0.3, 0, 1) * np.clip((2 * total / 3 - time) / 0.3, 0, 1)
    rumble = np.convolve(generator.standard_normal(length), np.ones(rate // 500) / (rate // 500), "same")
    fan = unit(unit(rumble) + 0.5 * np.sin(2 * np.pi * 120 * time))
    return noise + fan * fan_on * db(-35.0)


def hum(frequency: float) -> Callable[[int, int, np.random.Generator], np.ndarray]:
    def make(length: int, rate: int, generator: np.random.Generator) -> np.ndarray:
        """Mains buzz: the fundamental and its harmonics up to 1 kHz, at -35 dBFS, over noise at -65."""
        time = np.arange(length) / rate
        buzz = sum(np.sin(2 * np.pi * frequency * k * time + 0.7 * k) / k ** 1.2
                   for k in range(1, int(min(1000, rate / 2 - 100) // frequency) + 1))
        return unit(buzz) * db(-35.0) + pink(length, generator) * db(-65.0)
    return make


def music(length: int, rate: int, generator: np.random.Generator) -> np.ndarray:
    """Chords of three sines (with two harmonics each), struck every 1.5 to 3 s and decaying."""
    roots = [220.0, 196.0, 174.6, 246.9, 261.6, 293.7]
    bed = np.zeros(length)
    start = 0
    while start < length:
        span = round(generator.uniform(1.5, 3.0) * rate)
        ring = min(length - start, span + rate)  # rings on under the next chord
        time = np.arange(ring) / rate
        envelope = np.minimum(time / 0.04, 1) * np.exp(-time / 1.5)
        root = roots[generator.integers(len(roots))]
        chord = sum(np.sin(2 * np.pi * root * ratio * k * time + generator.uniform(0, 6)) / k ** 2
                    for ratio in (1.0, 1.26, 1.5) for k in (1, 2, 3))
        bed[start:start + ring] += chord * envelope
        start += span
    return unit(bed) * db(-45.0) + pink(length, generator) * db(-75.0)


# -- the recording ------------------------------------------------------------------------------

def gated(word: np.ndarray, rate: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The clip as a gated microphone leaves it, 0.15 to 0.5 s of silence before and after the
    word and its frames 35 dB below its loudest silenced (5 ms fades); and where it is silent (0 to 1)."""
    lead, tail = (round(generator.uniform(0.15, 0.5) * rate) for _ in range(2))
    word = np.concatenate([np.zeros(lead), word, np.zeros(tail)])
    frame = round(0.01 * rate)
    energy = frame_power(word, rate)
    keep = np.repeat(energy >= energy.max() * 10 ** -3.5, frame)
    keep = np.concatenate([keep, np.full(len(word) - len(keep), False)])
    gain = np.convolve(keep.astype(float), np.ones(round(0.005 * rate)) / round(0.005 * rate), "same")
    return word * gain, 1 - gain


def build(out: Path, digits: list[tuple[Path, str]], kind: str, seed: int, rate: int | None = None,
          channels: int | None = None) -> list[dict]:
    """Write the recording of `kind` at `out` (16-bit PCM); returns the truth rows."""
    rate, channels = rate or KINDS[kind][0], channels or KINDS[kind][1]
    generator = np.random.default_rng(seed + 1)
    words = [resampled(path, rate) for path, _ in digits]
    silent = [None] * len(words)
    if kind == "gated":
        words, silent = zip(*(gated(word / np.sqrt(speech_power(word, rate)), rate, generator) for word in words))
    starts, position = [], round(1.0 * rate)
    for word in words:
        starts.append(position)
        position += len(word) + round(generator.uniform(*GAP_SECONDS) * rate)
    length = position + rate
    background = BACKGROUNDS[kind](length, rate, generator)
    truth, speech = [], np.zeros(length)
    for (path, label), word, start, quiet in zip(digits, words, starts, silent):
        low, high = (0, 30) if kind == "snr" else (10, 30)
        snr = generator.uniform(low, high)
        here = background[start:start + len(word)]
        noise_power = float(np.mean(here ** 2)) if kind != "gated" else db(-56.0) ** 2
        word = word * np.sqrt(10 ** (snr / 10) * noise_power / speech_power(word, rate))
        if quiet is not None:  # the room noise stops under the clip; its silence is dither at -80 dBFS
            background[start:start + len(word)] = generator.standard_normal(len(word)) * db(-80.0) * quiet
        speech[start:start + len(word)] += word
        onset, end = word_extent(word, rate)
        truth.append({"onset": round(start / rate + onset, 4), "end": round(start / rate + end, 4),
                      "label": label, "snr_db": round(snr, 1), "file": path.name})
    if kind == "clicks":
        background += disturbances(starts, [len(word) for word in words], length, rate, generator)
    mono = background + speech
    if channels == 1:
        signal = mono[:, None]
    else:
        other = background * 0.8 + np.roll(background, round(0.007 * rate)) * 0.6 + speech * 0.9  # another microphone
        signal = np.stack([mono, other], axis=1)
    soundfile.write(out, np.clip(signal, -1, 1).astype(np.float32), rate, subtype="PCM_16")
    return truth


def disturbances(starts: list[int], lengths: list[int], length: int, rate: int,
                 generator: np.random.Generator) -> np.ndarray:
    """Clicks in most pauses and a door-like thump in every fourth, 0.25 s or more from a word."""
    out = np.zeros(length)
    noise_level = db(-55.0)
    for number, (start, size) in enumerate(zip(starts, lengths)):
        pause_start = start + size + round(0.25 * rate)
        pause_end = (starts[number + 1] if number + 1 < len(starts) else length - rate) - round(0.25 * rate)
        if pause_end - pause_start < round(0.3 * rate):
            continue
        at = int(generator.integers(pause_start, pause_end - round(0.25 * rate)))
        if number % 4 == 3:
            time = np.arange(round(0.25 * rate)) / rate
            body = np.sin(2 * np.pi * generator.uniform(40, 90) * time) * np.exp(-time / 0.06)
            knock = generator.standard_normal(len(time)) * np.exp(-time / 0.004)
            thump = unit(body + 0.5 * knock) * noise_level * db(35.0)
            out[at:at + len(thump)] += thump
        else:
            click = generator.standard_normal(round(0.002 * rate)) * noise_level * db(30.0)
            out[at:at + len(click)] += click
    return out


BACKGROUNDS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "steady": steady, "gated": lambda n, r, g: steady(n, r, g, -56.0), "fades": fades, "hum50": hum(50.0),
    "hum60": hum(60.0), "clicks": lambda n, r, g: steady(n, r, g, -55.0), "music": music, "snr": steady,
}
