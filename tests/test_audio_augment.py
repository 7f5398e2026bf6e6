"""Audio augmentation on waveforms: speed, pitch, noise at an SNR, background recordings, gain,
time shift and the background class; each seeded, and a resumed run ending like a whole one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import REPO
from test_resume import Crash, CrashAtNote

from cnncli.bundle.io import load_bundle, read_resume_state
from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.modalities.audio import AudioAugment, AudioModality, AudioOptions
from cnncli.modalities.audio.background import BACKGROUND_LABEL, background_samples
from cnncli.modalities.audio.waveforms import active_power, change_speed, stretch_time, warp_frequencies
from cnncli.recipe.config import load_config
from cnncli.training.train import train

RATE = 8000


def options(**changes) -> AudioOptions:
    return AudioOptions(**{**dict(sample_rate=RATE, n_fft=256, hop_length=64, n_mels=32, duration=1.0),
                           **changes})


def tones(frequencies: list[float], seconds: float = 0.4, amplitude: float = 0.3) -> torch.Tensor:
    """(N, 1, 8000): a tone of each frequency, centred in one second of silence."""
    time = torch.arange(round(seconds * RATE)) / RATE
    rows = torch.zeros(len(frequencies), 1, RATE)
    start = (RATE - len(time)) // 2
    for row, frequency in zip(rows, frequencies):
        row[0, start:start + len(time)] = amplitude * torch.sin(2 * math.pi * frequency * time)
    return rows


def dominant(waveform: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(waveform.double()).abs()
    return float(spectrum.argmax()) * RATE / len(waveform)


def noise_folder(tmp_path: Path) -> Path:
    """A folder with one 'noise' recording: a steady 1 kHz hum."""
    folder = tmp_path / "noise"
    folder.mkdir()
    time = np.arange(2 * RATE) / RATE
    soundfile.write(folder / "hum.wav", (0.1 * np.sin(2 * np.pi * 1000 * time)).astype(np.float32), RATE)
    return folder


AUGMENTATIONS = [
    {"speed": 0.1}, {"tempo": 0.3}, {"pitch": 0.1}, {"eq_db": 10.0}, {"noise_snr": [0.0, 20.0]},
    {"noise_snr": [5.0, 5.0], "noise_prob": 0.5}, {"gain_db": 6.0}, {"time_shift": 0.2},
    {"noise_snr": [0.0, 10.0], "background": "noise"}, {"noise_snr": [0.0, 10.0], "noise_tonal": 1.0},
    {"noise_snr": [10.0, 10.0], "noise_swell_db": 20.0},
    {"speed": 0.1, "pitch": 0.1, "eq_db": 6.0, "noise_snr": [0.0, 30.0], "gain_db": 6.0, "time_shift": 0.1,
     "time_mask": 5, "freq_mask": 4},
]


@pytest.mark.parametrize("settings", AUGMENTATIONS, ids=lambda settings: "+".join(settings))
def test_each_waveform_augmentation_is_seeded(settings: dict, tmp_path: Path):
    noise_folder(tmp_path)
    modality = AudioModality(options(), AudioAugment(**settings), root=str(tmp_path))
    modality.fit([])
    batch = tones([300, 500, 700, 900, 1100, 1300])
    first = modality.augment(batch, torch.Generator().manual_seed(3))
    assert first.shape == (6, *modality.featurized_shape)  # the features of the augmented sounds
    assert torch.equal(first, modality.augment(batch, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, modality.augment(batch, torch.Generator().manual_seed(4)))
    assert not torch.equal(first, modality.featurize(batch))


def test_no_augmentation_leaves_the_waveforms_to_the_stem():
    batch = tones([300, 600])
    assert AudioModality(options()).augment(batch, torch.Generator().manual_seed(0)) is batch


def test_speed_scales_the_pitch_and_keeps_the_length_and_the_centre():
    time = torch.arange(RATE) / RATE
    waves = torch.sin(2 * math.pi * 440 * time).repeat(3, 1)
    faster = change_speed(waves, torch.tensor([0.9, 1.0, 1.1]))
    assert faster.shape == waves.shape
    assert [dominant(row[2000:6000]) for row in faster] == pytest.approx([396, 440, 484], abs=2.1)
    assert torch.allclose(faster[1], waves[1], atol=1e-5)
    # a click in the centre stays there, whatever the speed
    click = torch.zeros(2, RATE)
    click[:, RATE // 2] = 1.0
    assert change_speed(click, torch.tensor([0.9, 1.1])).abs().argmax(dim=1).tolist() == [RATE // 2] * 2


def test_pitch_moves_the_frequencies_and_keeps_the_frames():
    power = torch.zeros(2, 129, 5)
    power[:, 40] = 1.0
    warped = warp_frequencies(power, torch.tensor([1.0, 1.1]))
    assert torch.equal(warped[0], power[0])
    assert int(warped[1, :, 2].argmax()) == 44 and torch.allclose(warped[1].sum(0), warped[1, :, 0].sum().expand(5))


def test_tempo_stretches_the_frames_around_the_centre_and_keeps_the_frequencies():
    power = torch.zeros(3, 9, 41)
    power[:, 4, 18:23] = 1.0  # five frames of one band, centred
    stretched = stretch_time(power, torch.tensor([1.0, 2.0, 0.5]))
    assert torch.equal(stretched[0], power[0])
    lengths = (stretched[:, 4] > 0.5).sum(dim=1).tolist()
    assert lengths[1] >= 9 and lengths[2] <= 3 and stretched[:, [0, 1, 2, 3, 5, 6, 7, 8]].abs().max() == 0
    assert [int(row[4].argmax()) for row in stretched] == [18, 16, 19] and float(stretched[1, 4, 20]) == 1.0


def test_noise_is_mixed_at_the_asked_snr_over_the_sounding_part():
    batch = tones([300, 500, 700])
    modality = AudioModality(options(), AudioAugment(noise_snr=[10.0, 10.0]))
    generator = torch.Generator().manual_seed(0)
    from cnncli.modalities.audio.augment import augment_waveforms

    noisy = augment_waveforms(batch[:, 0], modality.augment_config, RATE, generator)
    noise = noisy - batch[:, 0]
    snr = 10 * torch.log10(active_power(batch[:, 0], RATE) / noise.pow(2).mean(dim=1))
    assert snr.tolist() == pytest.approx([10.0] * 3, abs=0.05)  # the tone's level, not the padded mean


def test_tonal_beds_are_chords_of_a_few_lines_made_the_same_whichever_rows_get_them():
    from cnncli.modalities.audio.waveforms import HARMONICS, TONES, tonal_beds

    every = torch.ones(64, dtype=torch.bool)
    beds = tonal_beds(64, RATE, RATE, torch.Generator().manual_seed(0), "cpu", every)
    assert beds.pow(2).mean(dim=1).tolist() == pytest.approx([1.0] * 64, rel=1e-4)
    halves = [torch.fft.rfft(beds[:, part].double()).abs().pow(2) for part in (slice(0, 400), slice(-400, None))]
    for spectrum in halves:  # a short stretch before and after the chord changes: its power in a few bins
        top = spectrum.sort(dim=1, descending=True).values
        share = top[:, :3 * TONES * HARMONICS].sum(dim=1) / spectrum.sum(dim=1)
        assert float(share.median()) > 0.8  # white noise: 54 of 201 bins hold about a quarter
    some = torch.zeros(64, dtype=torch.bool)
    some[[3, 40]] = True
    again = tonal_beds(64, RATE, RATE, torch.Generator().manual_seed(0), "cpu", some)
    assert torch.equal(again[some], beds[some]) and again[~some].abs().max() == 0


def test_the_noise_swell_moves_its_level_evenly_across_the_row():
    from cnncli.modalities.audio.waveforms import swell

    steady = torch.ones(2, 1000)
    swelled = swell(steady, torch.tensor([20.0, -6.0]))
    assert 20 * math.log10(swelled[0, -1] / swelled[0, 0]) == pytest.approx(20.0, abs=0.1)
    assert 20 * math.log10(swelled[1, -1] / swelled[1, 0]) == pytest.approx(-6.0, abs=0.1)
    assert float(swelled[0, 500]) == pytest.approx(1.0, abs=0.01)  # about the middle


def test_background_recordings_are_the_noise(tmp_path: Path):
    from cnncli.modalities.audio.augment import augment_waveforms

    noise_folder(tmp_path)
    modality = AudioModality(options(), AudioAugment(noise_snr=[0.0, 0.0], background="noise"), root=str(tmp_path))
    modality.fit([])
    batch = tones([300, 500])[:, 0]
    noisy = augment_waveforms(batch, modality.augment_config, RATE, torch.Generator().manual_seed(0),
                              modality.background)
    assert [dominant(row) for row in noisy - batch] == pytest.approx([1000, 1000], abs=2)


def test_a_background_folder_without_recordings_is_an_error_naming_the_key(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    modality = AudioModality(options(), AudioAugment(noise_snr=[0.0, 10.0], background="empty"), root=str(tmp_path))
    with pytest.raises(CnncliError, match="augment.background"):
        modality.fit([])


@pytest.mark.parametrize("settings, key", [(dict(noise_snr=[20.0, 5.0]), "noise_snr"), (dict(speed=1.5), "speed"),
                                           (dict(noise_prob=2.0), "noise_prob"), (dict(background="x"), "background"),
                                           (dict(noise_tonal=0.5), "noise_tonal"),
                                           (dict(noise_snr=[0.0, 9.0], noise_tonal=1.5), "noise_tonal"),
                                           (dict(noise_swell_db=10.0), "noise_swell_db")])
def test_bad_augment_values_name_their_key(settings: dict, key: str):
    with pytest.raises(CnncliError, match=f"augment.{key}"):
        AudioModality(options(), AudioAugment(**settings))


def test_gain_scales_each_row_by_one_factor_within_the_range():
    from cnncli.modalities.audio.augment import augment_waveforms

    batch = tones([300, 500, 700, 900])[:, 0]
    gained = augment_waveforms(batch, AudioAugment(gain_db=6.0), RATE, torch.Generator().manual_seed(0))
    middle = slice(RATE // 2 - 100, RATE // 2 + 100)
    ratios = gained[:, middle] / batch[:, middle]
    assert torch.allclose(ratios, ratios[:, :1].expand_as(ratios), atol=1e-5)
    decibels = 20 * torch.log10(ratios[:, 0])
    assert decibels.abs().max() <= 6 and decibels.std() > 0.1


def test_background_rows_are_made_the_same_every_time_and_join_the_labels(tmp_path: Path):
    samples = background_samples(40, 0.25)
    assert len(samples) == 10 and {sample.label for sample in samples} == {BACKGROUND_LABEL}
    modality = AudioModality(options())
    first, again = modality.encode_many(samples[:3]), modality.encode_many(samples[:3])
    assert torch.equal(first.tensor, again.tensor) and not torch.equal(first.tensor[0], first.tensor[1])
    levels = 10 * torch.log10(first.tensor.pow(2).mean(dim=(1, 2)))
    assert ((levels > -71) & (levels < -19)).all()
    with pytest.raises(CnncliError, match="file"):
        modality.encode(Sample("odd", content=b"bytes"))


def audio_recipe(tmp_path: Path, augment: str) -> Path:
    path = tmp_path / "audio.yaml"
    path.write_text(
        f"data: {{modality: audio, root: {REPO / 'sample_data' / 'audio'}, format: files, label_regex: '^(\\d)_',\n"
        "       split: {val_fraction: 0.2, test_fraction: 0.2},\n"
        "       audio: {sample_rate: 8000, n_fft: 256, hop_length: 128, n_mels: 16, duration: 0.8, cache: null}}\n"
        "model: {blocks: [{conv: {channels: 4, batch_norm: true}}, {dropout: 0.2}, {pool: {size: global}}]}\n"
        "train: {epochs: 3, batch_size: 16, lr: 0.01, schedule: cosine, keep: best, threads: 1}\n"
        f"augment: {augment}\n")
    return path


def test_a_resumed_run_with_waveform_augmentation_ends_like_a_whole_one(tmp_path: Path):
    noise_folder(tmp_path)
    augment = (f"{{speed: 0.1, pitch: 0.05, noise_snr: [0, 30], noise_prob: 0.8, background: {tmp_path / 'noise'}, "
               "gain_db: 6, time_shift: 0.1, time_mask: 4, freq_mask: 2, background_class: 0.1}")
    config = load_config(audio_recipe(tmp_path, augment))
    whole = train(config, tmp_path / "whole")
    with pytest.raises(Crash):
        train(config, tmp_path / "cut", CrashAtNote(2))
    saved, state = read_resume_state(tmp_path / "cut")
    train(saved, tmp_path / "cut", resume=state)
    ours, theirs = load_bundle(tmp_path / "cut"), load_bundle(tmp_path / "whole")
    for (name, mine), other in zip(ours.network.state_dict().items(), theirs.network.state_dict().values()):
        assert torch.equal(mine, other), name
    assert ours.labels == theirs.labels and ours.labels[-1] == BACKGROUND_LABEL
    recorded = json.loads((tmp_path / "whole" / "model.json").read_text())
    assert recorded["recipe"]["augment"]["noise_snr"] == [0.0, 30.0] and recorded["recipe"]["augment"]["speed"] == 0.1
    assert recorded["split"]["made_train_samples"] > 0 and whole.metrics["test"]["n"] > 0
