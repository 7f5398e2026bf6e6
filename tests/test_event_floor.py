"""predict --segment's noise floor where a recording's quiet parts differ: tones at known onsets
between two quiet levels (gated clips cut into room noise), under mains hum louder than they
are, beside door thumps and clicks, through a fade and a fan switched on and off; words at 2 to
3 dB SNR in white and pink noise, found by the sub-band they stand out in; and sounds decided
within the latency asked for, the same whatever blocks the audio comes in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from cnncli.errors import CnncliError
from cnncli.modalities.audio import AudioModality, AudioOptions
from cnncli.modalities.audio.events import EventDetector

RATE = 16000
GENERATOR = np.random.default_rng(0)


def options(**changes) -> AudioOptions:
    return AudioOptions(**{"sample_rate": 8000, "n_fft": 256, "hop_length": 64, "n_mels": 32, "duration": 1.0,
                           **changes})


def tone(seconds: float, dbfs: float, frequency: float = 700.0) -> np.ndarray:
    time = np.arange(round(seconds * RATE)) / RATE
    return np.sqrt(2) * 10 ** (dbfs / 20) * np.sin(2 * np.pi * frequency * time)


def noise(seconds: float, dbfs: float) -> np.ndarray:
    return GENERATOR.standard_normal(round(seconds * RATE)) * 10 ** (dbfs / 20)


def with_tones(signal: np.ndarray, onsets: list[float], dbfs, seconds: float = 0.4) -> np.ndarray:
    """`signal` with a tone of `seconds` at each onset, at `dbfs` (a number, or a function of the onset)."""
    signal = signal.copy()
    for onset in onsets:
        start = round(onset * RATE)
        signal[start:start + round(seconds * RATE)] += tone(seconds, dbfs(onset) if callable(dbfs) else dbfs)
    return signal


def events(tmp_path: Path, signal: np.ndarray, **changes) -> list[tuple[float, float]]:
    path = tmp_path / "long.wav"
    soundfile.write(path, signal.astype(np.float32), RATE, subtype="FLOAT")
    return [span for spans, _ in AudioModality(options(**changes)).spans(str(path)) for span in spans]


def onsets_of(found: list[tuple[float, float]]) -> list[float]:
    return [start for start, _ in found]


def near(onsets: list[float]) -> list:
    """The onsets, to 30 ms (a frame's 20 ms window and the 30 ms smoothing hear a sound early)."""
    return [pytest.approx(onset, abs=0.03) for onset in onsets]


def two_quiet_levels() -> tuple[np.ndarray, list[float]]:
    """Ten gated clips (a tone between 0.3 s of near-digital silence, -90 dBFS, either side) cut
    into room noise at -50 dBFS that stops under each clip: the silence is 40 dB under the room
    noise and takes a quarter of the recording (as bench/recordings.py's `gated` kind)."""
    parts, onsets, position = [noise(1.0, -50)], [], 1.0
    for number in range(10):
        onsets.append(round(position + 0.3, 2))
        parts += [noise(0.3, -90), tone(0.35, -30, 500 + 100 * number) + noise(0.35, -90), noise(0.3, -90),
                  noise(1.0, -50)]
        position += 1.95
    return np.concatenate(parts), onsets


def test_tones_between_two_quiet_levels_are_found_and_the_room_noise_between_clips_is_not(tmp_path: Path):
    # the 10th percentile of the frames sat in the clips' silence, 40 dB under the room noise,
    # and every stretch of room noise was a sound of its own (21 events for 10 tones)
    signal, onsets = two_quiet_levels()
    found = events(tmp_path, signal)
    assert onsets_of(found) == near(onsets)
    assert all(end - start == pytest.approx(0.37, abs=0.03) for start, end in found)


def test_mains_hum_louder_than_the_sounds_does_not_hide_them(tmp_path: Path):
    # 50 Hz at -25 dBFS, the tones 15 dB under it: the level is measured above 200 Hz
    time = np.arange(12 * RATE) / RATE
    hum = np.sqrt(2) * 10 ** (-25 / 20) * np.sin(2 * np.pi * 50 * time) + noise(12, -60)
    onsets = [1.0, 3.5, 6.0, 8.5]
    assert onsets_of(events(tmp_path, with_tones(hum, onsets, -40))) == near(onsets)


def test_door_thumps_and_clicks_are_not_sounds(tmp_path: Path):
    onsets = [1.0, 4.0, 7.0, 10.0]
    signal = with_tones(noise(12, -55), onsets, -30)
    time = np.arange(round(0.3 * RATE)) / RATE
    for at in (2.5, 5.5, 8.5):  # a 60 Hz body dying away in 60 ms, 40 dB over the noise
        signal[round(at * RATE):round(at * RATE) + len(time)] += 0.18 * np.sin(2 * np.pi * 60 * time) * np.exp(-time / 0.06)
    for at in (3.0, 6.2, 9.3):  # 2 ms clicks
        signal[round(at * RATE):round(at * RATE) + 32] += 0.1 * GENERATOR.standard_normal(32)
    assert onsets_of(events(tmp_path, signal)) == near(onsets)


def test_the_floor_follows_a_fade_from_near_silence_to_loud_noise(tmp_path: Path):
    time = np.arange(20 * RATE) / RATE
    fade = GENERATOR.standard_normal(len(time)) * 10 ** ((-75 + 35 * time / 20) / 20)
    onsets = [1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0, 19.0]
    assert onsets_of(events(tmp_path, with_tones(fade, onsets, lambda onset: -60 + 35 * onset / 20))) == near(onsets)


def test_after_a_fan_switches_on_or_off_the_floor_follows_within_three_seconds(tmp_path: Path):
    # the noise 15 dB louder from 6 to 14 s; each tone 15 dB over the noise where it is
    time = np.arange(22 * RATE) / RATE
    fan = (time >= 6) & (time < 14)
    signal = GENERATOR.standard_normal(len(time)) * 10 ** (np.where(fan, -45.0, -60.0) / 20)
    onsets = [1.0, 3.0, 9.0, 11.0, 17.0, 19.0]  # 3 s and more after each switch
    found = onsets_of(events(tmp_path, with_tones(signal, onsets, lambda onset: -30 if 6 <= onset < 14 else -45)))
    assert [start for start in found if abs(start - 6.0) > 0.02] == near(onsets)  # the switching on may be a sound


def colored_noise(seconds: float, dbfs: float, color: str, generator=GENERATOR) -> np.ndarray:
    """White or pink noise of `dbfs` power over the whole recording's band."""
    signal = generator.standard_normal(round(seconds * RATE))
    if color == "pink":
        spectrum = np.fft.rfft(signal) / np.sqrt(np.maximum(np.arange(len(signal) // 2 + 1), 1))
        spectrum[0] = 0
        signal = np.fft.irfft(spectrum, n=len(signal))
    return signal / np.sqrt(np.mean(signal ** 2)) * 10 ** (dbfs / 20)


def words_in_noise(snr_db: float, color: str, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """20 s of noise at -40 dBFS with ten 0.4 s "words" at `snr_db` over its broadband power: noise
    between 530 and 680 Hz (one sub-band, as a voice's pitch or a formant) under a Hann envelope."""
    generator = np.random.default_rng(seed)
    signal, onsets = colored_noise(20.0, -40.0, color, generator), [4.0 + 1.5 * number for number in range(10)]
    length = round(0.4 * RATE)
    for onset in onsets:
        spectrum = np.fft.rfft(generator.standard_normal(length))
        frequencies = np.fft.rfftfreq(length, 1 / RATE)
        spectrum[(frequencies < 530) | (frequencies > 680)] = 0
        word = np.fft.irfft(spectrum, n=length) * np.hanning(length)
        start = round(onset * RATE)
        signal[start:start + length] += word / np.sqrt(np.mean(word ** 2)) * 10 ** ((snr_db - 40) / 20)
    return signal, onsets


@pytest.mark.parametrize("snr_db, color", [(3.0, "white"), (2.0, "pink")])
def test_words_at_low_snr_are_found_by_the_sub_band_they_stand_out_in(tmp_path: Path, snr_db: float, color: str):
    # over the whole band these stand 10 dB above the floor for a few frames only (the whole band
    # alone found 4 to 10 of 10, late: 0 to 4 within 0.1 s); in their sub-band, for most of their length
    signal, onsets = words_in_noise(snr_db, color)
    found = events(tmp_path, signal)
    assert onsets_of(found) == [pytest.approx(onset, abs=0.1) for onset in onsets]


@pytest.mark.parametrize("color", ["white", "pink"])
def test_steady_noise_alone_gives_no_sounds(tmp_path: Path, color: str):
    assert events(tmp_path, colored_noise(30.0, -40.0, color)) == []


def test_sounds_found_in_a_sub_band_are_the_same_whatever_the_blocks():
    samples = words_in_noise(0.0, "pink")[0].astype(np.float32)

    def spans(sizes, latency: float = 1.0) -> list[tuple[int, int]]:
        detector, out, position = EventDetector(RATE, options(), latency), [], 0
        for size in sizes:
            out += [span for span, _ in detector.push(samples[position:position + size])]
            position += size
            if position >= len(samples):
                break
        return out + [span for span, _ in detector.finish()]

    whole = spans([len(samples)])
    assert len(whole) == 10
    assert spans(GENERATOR.integers(1, 4000, size=len(samples))) == whole == spans([160] * len(samples))
    # with 0.17 s of look-ahead (--latency 0.5) the sub-bands extend nothing: the band alone finds fewer
    assert len(spans([len(samples)], latency=0.5)) < 10


def test_sounds_are_the_same_whatever_the_blocks_and_decided_within_the_latency():
    signal, _ = two_quiet_levels()
    samples = signal.astype(np.float32)

    def decided(latency: float, sizes) -> list[tuple[tuple[int, int], int]]:
        """(span, samples received when it came out) of each sound, fed in blocks of `sizes`."""
        detector, out, position = EventDetector(RATE, options(), latency), [], 0
        for size in sizes:
            block = samples[position:position + size]
            position += len(block)
            out += [(span, position) for span, _ in detector.push(block)]
            if position >= len(samples):
                break
        return out + [(span, position) for span, _ in detector.finish()]

    whole = decided(0.5, [len(samples)])
    for sizes in ([160] * len(samples), GENERATOR.integers(1, 4000, size=len(samples))):
        piecewise = decided(0.5, sizes)
        assert [span for span, _ in piecewise] == [span for span, _ in whole] and len(whole) == 10
        # 0.5 s after a sound's end (and a frame, the smoothing and a block's length)
        assert all(received - end <= 0.5 * RATE + 0.05 * RATE + max(sizes) for (_, end), received in piecewise)
    slow = decided(2.0, [160] * len(samples))
    assert [start for (start, _), _ in slow] == pytest.approx([start for (start, _), _ in whole], abs=0.03 * RATE)
    assert all(received - end >= 1.9 * RATE for (_, end), received in slow[:-1])


@pytest.mark.parametrize("latency", [0.05, 11.0, float("nan")])
def test_a_latency_shorter_than_the_margin_cut_with_a_sound_or_past_ten_seconds_is_refused(latency: float):
    with pytest.raises(CnncliError, match=f"--latency {latency}: from 0.1 seconds"):
        EventDetector(RATE, options(), latency)
