"""Audio: decoding, resampling, features (checked against librosa), cache, augmentation, windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import REPO, SHARED_DATA

from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.modalities.audio import AudioAugment, AudioModality, AudioOptions
from cnncli.modalities.audio.decoding import decode, read_bytes
from cnncli.modalities.audio.features import FeatureExtractor, fit_length

SAMPLE_AUDIO = REPO / "sample_data" / "audio"


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def dominant_frequency(waveform: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(waveform.double()).abs()
    return float(spectrum.argmax()) * rate / len(waveform)


def options(**changes) -> AudioOptions:
    base = dict(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, duration=0.5)
    return AudioOptions(**{**base, **changes})


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_each_format_decodes_to_mono_at_the_recipe_rate(tmp_path: Path, suffix: str):
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, tone(440, 0.5, 16000), 16000)
    waveform = decode(path, read_bytes(path), 8000)
    assert waveform.dim() == 1 and waveform.dtype == torch.float32
    # mp3 and ogg encoders add some priming/padding samples; the length is right within 60 ms.
    assert abs(len(waveform) - 4000) <= (0 if suffix in (".wav", ".flac") else 480)
    assert dominant_frequency(waveform, 8000) == pytest.approx(440, abs=4)
    modality = AudioModality(options())
    encoded = modality.encode(Sample(str(path)))
    assert tuple(encoded.shape) == (1, 4000)  # the waveform at the recipe's rate, 0.5 s
    assert tuple(modality.featurize(encoded[None]).shape) == (1, 1, 32, 1 + 4000 // 64)
    legacy = AudioModality(options(), encoding="spectrogram").encode(Sample(str(path)))
    assert torch.equal(legacy, modality.featurize(encoded[None])[0])


def test_stereo_44k_becomes_mono_16k_with_the_tone_kept(tmp_path: Path):
    path = tmp_path / "stereo.wav"
    left, right = tone(1000, 1.0, 44100, 0.8), np.zeros(44100, dtype=np.float32)
    soundfile.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    waveform = decode(path, read_bytes(path), 16000)
    assert len(waveform) == 16000
    assert dominant_frequency(waveform, 16000) == pytest.approx(1000, abs=2)
    # mix-down averages the channels: a 0.8 tone on one side and silence on the other -> 0.4
    assert float(waveform[1000:-1000].abs().max()) == pytest.approx(0.4, abs=0.01)


@pytest.mark.parametrize("features", ["logmel", "stft", "mfcc"])
def test_features_match_librosa_within_a_hundredth_of_a_db(features: str):
    import librosa

    rate = 8000
    generator = np.random.default_rng(0)
    time = np.arange(rate) / rate
    signal = (0.3 * np.sin(2 * np.pi * (200 + 1500 * time) * time) + 0.05 * generator.standard_normal(rate))
    signal = signal.astype(np.float32)
    settings = options(features=features, duration=1.0, f_min=50.0, f_max=3800.0, n_mfcc=13)
    ours = FeatureExtractor(settings)(torch.from_numpy(signal)[None])[0, 0].numpy()
    framing = dict(n_fft=256, hop_length=64)  # librosa defaults: centred, zero padding, periodic Hann
    if features == "logmel":
        power = librosa.feature.melspectrogram(y=signal, sr=rate, n_mels=32, fmin=50.0, fmax=3800.0, **framing)
        reference = librosa.power_to_db(power, ref=1.0, top_db=80.0)
    elif features == "stft":
        reference = librosa.power_to_db(np.abs(librosa.stft(signal, **framing)) ** 2, top_db=80.0)
    else:
        reference = librosa.feature.mfcc(y=signal, sr=rate, n_mfcc=13, n_mels=32, fmin=50.0, fmax=3800.0, **framing)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 0.01  # dB (MFCC: same units), float32 vs float64 maths


def test_rows_are_frequency_bands_from_low_to_high():
    low = FeatureExtractor(options())(torch.from_numpy(tone(300, 0.5, 8000))[None])[0, 0]
    high = FeatureExtractor(options())(torch.from_numpy(tone(3000, 0.5, 8000))[None])[0, 0]
    assert int(low.mean(1).argmax()) < 8 < int(high.mean(1).argmax())


def test_short_recordings_are_padded_and_long_ones_centre_cropped():
    length = 4000
    short = fit_length(torch.ones(1000), length)
    assert len(short) == length and short[:1500].abs().sum() == 0 and short[1500:2500].eq(1).all()
    ramp = torch.arange(10000.0)
    assert fit_length(ramp, length)[0] == 3000 and len(fit_length(ramp, length)) == length


@pytest.mark.parametrize("encoding", ["waveform", "spectrogram"])
def test_second_encode_reads_the_cache(tmp_path: Path, encoding: str):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(440, 0.5, 8000), 8000)
    cache = tmp_path / "cache"
    modality = AudioModality(options(), encoding=encoding)
    modality.use_cache(cache)
    first = modality.encode(Sample(str(path)))
    entries = list(cache.rglob("*.npy"))
    assert len(entries) == 1 and not list(cache.rglob("*.tmp"))
    # Overwrite the entry with a marker: if the second encode decoded the file, it would not see it.
    np.save(entries[0], np.full(tuple(first.shape), 7.0, dtype=np.float32))
    assert modality.encode(Sample(str(path))).eq(7.0).all()
    # A copy under another name has the same bytes, so it hits the same entry ...
    copy = tmp_path / "copy.wav"
    copy.write_bytes(path.read_bytes())
    assert modality.encode(Sample(str(copy))).eq(7.0).all()
    # ... and another rate is another key, computed afresh.
    other = AudioModality(options(sample_rate=4000), encoding=encoding)
    other.use_cache(cache)
    assert other.encode(Sample(str(path))).shape[-1] == (2000 if encoding == "waveform" else 1 + 2000 // 64)
    assert len(list(cache.rglob("*.npy"))) == 2
    # Other mel bands: a new spectrogram, but the same decoded waveform.
    bands = AudioModality(options(n_mels=16), encoding=encoding)
    bands.use_cache(cache)
    bands.encode(Sample(str(path)))
    assert len(list(cache.rglob("*.npy"))) == (2 if encoding == "waveform" else 3)


def test_no_cache_writes_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(440, 0.5, 8000), 8000)
    AudioModality(options()).encode(Sample(str(path)))  # no use_cache: no folder
    assert not [item for item in tmp_path.rglob("*") if item != path]


def test_corrupt_empty_truncated_and_missing_files_are_reported_by_name_and_the_rest_encoded(tmp_path: Path):
    good = tmp_path / "good.wav"
    soundfile.write(good, tone(440, 0.5, 8000), 8000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not a recording\n" * 20)
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(good.read_bytes()[:3000])
    silent = tmp_path / "zero.wav"
    soundfile.write(silent, np.zeros(0, dtype=np.float32), 8000)
    missing = tmp_path / "gone.flac"
    bad = [empty, text, truncated, silent, missing]
    encoded = AudioModality(options()).encode_many([Sample(str(p)) for p in [good, *bad, good]])
    assert encoded.index == [0, 6] and encoded.tensor.shape[0] == 2
    assert sorted(encoded.failures) == [1, 2, 3, 4, 5]
    for position, path in enumerate(bad, start=1):
        assert str(path) in encoded.failures[position]
    assert "empty" in encoded.failures[1] and "truncated" in encoded.failures[3]
    with pytest.raises(CnncliError, match="notes.wav"):
        AudioModality(options()).encode(Sample(str(text)))


def fitted_modality(augment: AudioAugment) -> tuple[AudioModality, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    modality = AudioModality(options(), augment)
    batch = torch.randn(8, 1, 32, 63, generator=generator) * 10 - 40
    modality.fit_encoded(batch)
    return modality, batch


def test_specaugment_fills_whole_stripes_with_the_band_mean():
    modality, batch = fitted_modality(AudioAugment(time_mask=10, freq_mask=6))
    augmented = modality.augment(batch, torch.Generator().manual_seed(1))
    mean = torch.tensor(modality.mean).view(1, 1, -1, 1).expand_as(batch)
    changed = augmented != batch
    assert changed.any()
    assert torch.allclose(augmented[changed], mean[changed])  # masked = band mean = 0 after the stem
    stem = modality.build_stem()
    assert stem(augmented)[changed].abs().max() < 1e-4
    for sample in changed[:, 0]:  # each changed cell lies in a fully masked row or column
        rows, columns = sample.all(dim=1), sample.all(dim=0)
        assert (sample <= (rows.view(-1, 1) | columns.view(1, -1))).all()
        assert rows.sum() <= 6 and columns.sum() <= 10


def test_augment_is_seeded_and_off_unless_asked():
    modality, batch = fitted_modality(AudioAugment(time_mask=10, freq_mask=6, time_shift=0.2, gain_db=6, noise=0.1))
    first = modality.augment(batch, torch.Generator().manual_seed(3))
    again = modality.augment(batch, torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and not torch.equal(first, batch)
    plain, _ = fitted_modality(AudioAugment())
    assert plain.augment(batch, torch.Generator().manual_seed(3)) is batch


def test_time_shift_rolls_columns_and_gain_adds_decibels():
    modality, batch = fitted_modality(AudioAugment(time_shift=0.3))
    shifted = modality.augment(batch, torch.Generator().manual_seed(0))
    for before, after in zip(batch[:, 0], shifted[:, 0]):
        assert any(torch.equal(after, before.roll(k, dims=1)) for k in range(-19, 20))
    modality, batch = fitted_modality(AudioAugment(gain_db=6))
    gained = modality.augment(batch, torch.Generator().manual_seed(0))
    offsets = (gained - batch).flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-4)
    assert offsets.abs().max() <= 6 and offsets[:, 0].std() > 0


def test_state_round_trip_gives_the_same_stem_and_description():
    modality, batch = fitted_modality(AudioAugment())
    state = json.loads(json.dumps(modality.state_dict()))
    rebuilt = AudioModality.from_state(state)
    assert torch.equal(rebuilt.build_stem()(batch), modality.build_stem()(batch))
    assert rebuilt.describe() == modality.describe()
    assert "8000 Hz" in modality.describe() and "32 mel" in modality.describe() and "hop 64" in modality.describe()


def test_windows_over_a_long_recording_have_the_expected_spans_and_match_encode(tmp_path: Path):
    rate = 8000
    path = tmp_path / "long.wav"
    signal = np.concatenate([tone(300 + 100 * k, 1.0, rate) for k in range(10)])  # 10 s, a new tone each second
    soundfile.write(path, signal, rate, subtype="FLOAT")
    modality = AudioModality(options(sample_rate=16000, duration=1.0))
    chunks = list(modality.spans(str(path), batch_size=8, window=(1.0, 0.5)))
    assert [len(spans) for spans, _ in chunks] == [8, 8, 3]
    spans = [span for chunk_spans, _ in chunks for span in chunk_spans]
    assert spans == [(0.5 * k, 0.5 * k + 1.0) for k in range(19)]
    batches = torch.cat([batch for _, batch in chunks])
    assert batches.shape == (19, *modality.input_shape)
    # window 4 = seconds 2..3, the same as encoding that second saved as its own file
    piece = tmp_path / "piece.wav"
    soundfile.write(piece, signal[2 * rate:3 * rate], rate, subtype="FLOAT")
    assert torch.allclose(batches[4], modality.encode(Sample(str(piece))), atol=1e-3)


def test_a_recording_shorter_than_the_window_is_one_window(tmp_path: Path):
    path = tmp_path / "short.wav"
    soundfile.write(path, tone(440, 0.3, 8000), 8000)
    chunks = list(AudioModality(options()).spans(str(path), window=(1.0, 0.5)))
    assert len(chunks) == 1 and chunks[0][0] == [(0.0, 0.3)] and chunks[0][1].shape[0] == 1


def test_windows_of_an_unreadable_file_name_it(tmp_path: Path):
    path = tmp_path / "broken.wav"
    path.write_text("not audio")
    with pytest.raises(CnncliError, match="broken.wav"):
        list(AudioModality(options()).spans(str(path), window=(1.0, 0.5)))


def test_draw_writes_a_png_of_the_spectrogram(tmp_path: Path):
    sample = Sample(str(sorted(SAMPLE_AUDIO.glob("*.wav"))[0]))
    out = tmp_path / "input.png"
    AudioModality(options()).draw(sample, out)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_bad_audio_options_name_their_key():
    with pytest.raises(CnncliError, match="data.audio.f_max"):
        AudioModality(options(f_max=6000.0))


def test_sample_recordings_are_small_and_credited():
    files = sorted(SAMPLE_AUDIO.glob("*.wav"))
    assert len(files) == 80 and sum(f.stat().st_size for f in files) < 1_000_000
    assert "26eb9aaf76e81b692f806f9140c2d2777410d7a1" in (SAMPLE_AUDIO / "ATTRIBUTION.md").read_text()


def test_quickstart_trains_and_predicts_windows(tmp_path: Path):
    from cnncli.bundle.io import load_bundle
    from cnncli.recipe.config import load_config
    from cnncli.training.train import train

    config = load_config(REPO / "recipes" / "audio-quickstart.yaml", ["train.epochs=2"])
    outcome = train(config, tmp_path / "bundle", cache=tmp_path / "cache")
    assert list((tmp_path / "cache" / "audio").rglob("*.npy"))
    assert outcome.metrics["test"]["n"] == 20 and outcome.metrics["val"]["n"] == 10
    bundle = load_bundle(tmp_path / "bundle")
    assert isinstance(bundle.modality, AudioModality) and bundle.modality.mean != [0.0] * 40
    spans, batch = next(bundle.modality.spans(str(sorted(SAMPLE_AUDIO.glob("*.wav"))[0]), window=(0.5, 0.25)))
    with torch.no_grad():
        assert bundle.network.eval()(batch).shape == (len(spans), 10)


@pytest.mark.slow
def test_fsdd_reaches_98_percent_test_accuracy(tmp_path: Path):
    from cnncli.recipe.config import load_config
    from cnncli.training.train import train

    if not (SHARED_DATA / "fsdd" / "recordings").exists():
        pytest.skip("FSDD is not in ../shared/data")
    outcome = train(load_config(REPO / "recipes" / "fsdd.yaml"), tmp_path / "fsdd")
    assert outcome.metrics["test"]["accuracy"] >= 0.98


def test_peak_level_makes_the_picture_independent_of_the_recording_level():
    loud = torch.from_numpy(tone(440, 0.5, 8000))[None, None]
    relative, absolute = AudioModality(options(level="peak")), AudioModality(options())
    # 20 dB quieter: the same picture (down to librosa's floor of -100 dB re full scale)
    assert torch.allclose(relative.featurize(loud), relative.featurize(loud * 0.1), atol=1e-3)
    assert relative.featurize(loud).max() == 0 and relative.featurize(loud).min() == -80
    difference = absolute.featurize(loud) - absolute.featurize(loud * 0.1)
    assert difference.max() == pytest.approx(20, abs=1e-3)


def test_the_stem_computes_the_features_and_keeps_only_its_statistics_as_weights():
    modality = AudioModality(options())
    waves = torch.from_numpy(tone(440, 0.5, 8000))[None, None]
    modality.fit_encoded(torch.cat([waves, waves * 0.5]))
    stem = modality.build_stem()
    assert sorted(stem.state_dict()) == ["mean", "std"]
    pictures = modality.featurize(waves)
    assert torch.allclose(stem(waves), stem(pictures)) and stem(waves).shape == (1, 1, 32, 63)
