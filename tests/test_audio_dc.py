"""data.audio.remove_dc: a sound card's DC offset changes neither a recording's picture nor the
sounds --segment finds; bundles made before the key keep the offset, as they were trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch
from conftest import REPO
from test_audio_events import TONES, recording

from cnncli.data.sample import Sample
from cnncli.modalities.audio import AudioModality, AudioOptions

RATE = 8000
OFFSET = 0.05  # 5% of full scale: -26 dBFS, far above a quiet room


def options(**changes) -> AudioOptions:
    return AudioOptions(**{**dict(sample_rate=RATE, n_fft=256, hop_length=64, n_mels=24, duration=1.0), **changes})


def word(path: Path, offset: float = 0.0) -> Path:
    """0.4 s of a two-tone "word" with a fade in and out, plus a constant offset."""
    time = np.arange(round(0.4 * RATE)) / RATE
    envelope = np.sin(np.pi * time / time[-1])
    signal = 0.3 * envelope * (np.sin(2 * np.pi * 300 * time) + 0.5 * np.sin(2 * np.pi * 1300 * time))
    soundfile.write(path, (signal + offset).astype(np.float32), RATE, subtype="FLOAT")
    return path


def picture(modality: AudioModality, path: Path) -> torch.Tensor:
    """The dB picture (bands x frames) the network would see of a file."""
    return modality.featurize(modality.encode(Sample(str(path), "0")).unsqueeze(0))[0]


def test_an_offset_leaves_the_picture_as_it_was(tmp_path: Path):
    clean, offset = word(tmp_path / "clean.wav"), word(tmp_path / "offset.wav", OFFSET)
    removed = AudioModality(options())
    assert (picture(removed, offset) - picture(removed, clean)).abs().max() < 0.05  # dB
    kept = AudioModality(options(remove_dc=False))
    assert (picture(kept, offset) - picture(kept, clean)).abs().max() > 10  # the lowest band lights up


def test_an_offset_leaves_the_windows_of_a_long_recording_as_they_were(tmp_path: Path):
    modality = AudioModality(options())
    clean, offset = word(tmp_path / "clean.wav"), word(tmp_path / "offset.wav", OFFSET)
    windows = [modality.featurize(torch.cat([batch for _, batch in modality.spans(str(path), window=(0.25, 0.1))]))
               for path in (clean, offset)]
    assert windows[0].shape == windows[1].shape and (windows[0] - windows[1]).abs().max() < 0.05


def test_segment_finds_the_same_sounds_under_an_offset(tmp_path: Path):
    """The floor of every frame rises by the offset's power unless it is removed: tones 30 dB
    above a quiet room are then only 6 dB above the offset, below the 10 dB threshold."""
    clean = recording(tmp_path / "clean.wav", RATE, channels=1)
    samples, _ = soundfile.read(clean, dtype="float32")
    shifted = tmp_path / "offset.wav"
    soundfile.write(shifted, samples + OFFSET, RATE, subtype="FLOAT")

    def events(path: Path, **changes) -> tuple[list, torch.Tensor]:
        modality = AudioModality(options(**changes))
        found = list(modality.spans(str(path)))
        pictures = [modality.featurize(batch) for _, batch in found]
        return [span for spans, _ in found for span in spans], torch.cat(pictures) if pictures else None

    spans, pictures = events(clean)
    shifted_spans, shifted_pictures = events(shifted)
    assert len(spans) == len(TONES) and shifted_spans == spans
    assert (shifted_pictures - pictures).abs().max() < 0.05
    assert len(events(shifted, remove_dc=False)[0]) < len(TONES)


def test_a_bundle_from_before_the_key_keeps_the_offset_and_new_ones_record_it():
    from cnncli.bundle.io import load_bundle

    old = load_bundle(REPO / "tests" / "fixtures" / "bundles-v1" / "audio")
    assert "remove_dc" not in old.info["modality"]["state"]["options"]
    assert old.modality.options.remove_dc is False
    new = AudioModality(options())
    assert new.options.remove_dc is True
    assert AudioModality.from_state(new.state_dict()).options.remove_dc is True
    assert "subtract the mean (the DC offset) of what is kept" in new.preprocessing()["steps"]
