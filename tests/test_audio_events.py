"""predict --segment: the sounds of a long recording found against its own noise floor (tones in
noise with known onsets), framed as training recordings, streamed with bounded memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import REPO
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.modalities.audio import AudioModality, AudioOptions
from cnncli.modalities.audio.events import EventDetector

# (onset s, length s, frequency Hz) of each tone
TONES = [(1.0, 0.4, 440.0), (2.3, 0.25, 880.0), (4.1, 0.6, 300.0), (6.0, 0.35, 1200.0), (8.7, 0.5, 660.0)]


def recording(path: Path, rate: int = 44100, seconds: float = 10.0, noise_dbfs: float = -50.0, tone_dbfs: float = -20.0,
              channels: int = 2, tones=TONES, seed: int = 0) -> Path:
    """Tones at known onsets in steady white noise, written as a float WAV."""
    generator = np.random.default_rng(seed)
    signal = generator.standard_normal(round(seconds * rate)) * 10 ** (noise_dbfs / 20)
    for onset, length, frequency in tones:
        time = np.arange(round(length * rate)) / rate
        start = round(onset * rate)
        signal[start:start + len(time)] += np.sqrt(2) * 10 ** (tone_dbfs / 20) * np.sin(2 * np.pi * frequency * time)
    soundfile.write(path, np.repeat(signal[:, None], channels, axis=1).astype(np.float32), rate, subtype="FLOAT")
    return path


def options(**changes) -> AudioOptions:
    return AudioOptions(**{**dict(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, duration=1.0),
                           **changes})


def events(path: Path, **changes) -> list[tuple[float, float]]:
    return [span for spans, _ in AudioModality(options(**changes)).spans(str(path)) for span in spans]


@pytest.mark.parametrize("rate, channels, tone_dbfs", [(44100, 2, -20.0), (8000, 1, -36.0), (16000, 1, -30.0)])
def test_tones_in_noise_are_found_at_their_onsets(tmp_path: Path, rate: int, channels: int, tone_dbfs: float):
    found = events(recording(tmp_path / "long.wav", rate, channels=channels, tone_dbfs=tone_dbfs))
    assert len(found) == len(TONES)
    for (start, end), (onset, length, _) in zip(found, TONES):
        assert start == pytest.approx(onset, abs=0.03) and end == pytest.approx(onset + length, abs=0.03)


def test_noise_alone_has_no_events_and_quiet_tones_in_digital_silence_are_found(tmp_path: Path):
    assert events(recording(tmp_path / "noise.wav", 16000, tones=[])) == []
    silent = recording(tmp_path / "silent.wav", 16000, noise_dbfs=-400.0, tone_dbfs=-60.0)
    assert [round(start, 1) for start, _ in events(silent)] == [onset for onset, _, _ in TONES]


def test_close_sounds_join_and_clicks_are_dropped(tmp_path: Path):
    tones = [(1.0, 0.3, 440.0), (1.4, 0.3, 440.0), (3.0, 0.03, 2000.0), (5.0, 0.3, 440.0)]  # 0.1 s pause; a click
    found = events(recording(tmp_path / "long.wav", 16000, seconds=6.0, tones=tones))
    assert [(round(start, 1), round(end, 1)) for start, end in found] == [(1.0, 1.7), (5.0, 5.3)]
    apart = events(recording(tmp_path / "apart.wav", 16000, seconds=6.0, tones=tones), event_min_gap=0.05)
    assert len(apart) == 3


def test_a_higher_threshold_keeps_only_the_louder_sounds(tmp_path: Path):
    path = recording(tmp_path / "long.wav", 16000, tone_dbfs=-42.0)  # 8 dB above the noise
    assert len(events(path, event_threshold_db=4.0)) == len(TONES)
    assert events(path, event_threshold_db=14.0) == []


def test_each_event_is_encoded_as_a_file_holding_that_stretch(tmp_path: Path):
    path = recording(tmp_path / "long.wav", 16000)
    modality = AudioModality(options())
    chunks = list(modality.spans(str(path)))
    spans, batch = [span for part, _ in chunks for span in part], torch.cat([part for _, part in chunks])
    signal, rate = soundfile.read(path, dtype="float32")
    start, end = spans[2]
    piece = tmp_path / "piece.wav"
    soundfile.write(piece, signal[round((start - 0.1) * rate):round((end + 0.1) * rate)], rate, subtype="FLOAT")
    assert torch.allclose(batch[2], modality.encode(Sample(str(piece))), atol=1e-4)


def test_memory_stays_flat_over_a_long_stream():
    rate, generator = 16000, np.random.default_rng(0)
    detector = EventDetector(rate, options())
    found, audio, energies = [], 0, 0
    time = np.arange(rate // 2) / rate
    for second in range(600):  # ten minutes, a tone every 3 s
        block = (generator.standard_normal(rate) * 1e-3).astype(np.float32)
        if second % 3 == 0:
            block[:rate // 2] += 0.1 * np.sin(2 * np.pi * 500 * time).astype(np.float32)
        found += [span for span, _ in detector.push(block)]
        audio, energies = max(audio, len(detector.audio)), max(energies, len(detector.energy))
    found += [span for span, _ in detector.finish()]
    assert len(found) == 200
    # the look-ahead, a block and the margins, never the whole stream
    assert audio < 8 * rate and energies < 12 / 0.01


def test_an_unreadable_or_empty_recording_names_the_file(tmp_path: Path):
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio")
    with pytest.raises(CnncliError, match="broken.wav"):
        events(broken)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(CnncliError, match="empty.wav"):
        events(empty)


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory) -> Path:
    from cnncli.recipe.config import load_config
    from cnncli.training.train import train

    out = tmp_path_factory.mktemp("bundle") / "digits"
    train(load_config(REPO / "recipes" / "audio-quickstart.yaml", ["train.epochs=1"]), out)
    return out


def test_predict_segment_streams_one_row_per_event(tmp_path: Path, digits_bundle: Path):
    path = recording(tmp_path / "long.wav", 22050)
    result = CliRunner().invoke(app, ["predict", str(digits_bundle), str(path), "--segment", "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [round(row["start"], 1) for row in rows] == [onset for onset, _, _ in TONES]
    assert all(row["label"] in [str(d) for d in range(10)] and 0 < row["score"] <= 1 for row in rows)
    csv = CliRunner().invoke(app, ["predict", str(digits_bundle), str(path), "--segment", "--format", "csv"])
    assert csv.stdout.splitlines()[0] == "input,start,end,label,score,top,error"
    both = CliRunner().invoke(app, ["predict", str(digits_bundle), str(path), "--segment", "--window", "1"])
    assert both.exit_code == 2 and "--segment" in both.output
