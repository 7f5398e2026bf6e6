"""Log-mel features for every FSDD recording: cnncli's batched path vs a per-file librosa loop.

Both sides decode, resample, pad/crop to one second and compute the same log-mel spectrogram
(the parameters of recipes/fsdd.yaml), cache off. Prints both times and the ratio.

    python bench/audio_features.py [--folder ../shared/data/fsdd/recordings] [--limit N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "fsdd" / "recordings"


def cnncli_features(files: list[Path], options):
    from cnncli.data.sample import Sample
    from cnncli.modalities.audio import AudioModality

    modality = AudioModality(options)
    encoded = modality.encode_many([Sample(str(path)) for path in files])
    assert not encoded.failures, encoded.failures
    return modality.featurize(encoded.tensor)  # the waveforms' spectrograms, as the stem computes them


def librosa_features(files: list[Path], options):
    import librosa

    length = round(options.duration * options.sample_rate)
    pictures = []
    for path in files:
        signal, _ = librosa.load(path, sr=options.sample_rate, mono=True)
        if len(signal) > length:  # centre crop, as cnncli does
            start = (len(signal) - length) // 2
            signal = signal[start:start + length]
        else:
            before = (length - len(signal)) // 2
            signal = np.pad(signal, (before, length - len(signal) - before))
        power = librosa.feature.melspectrogram(
            y=signal, sr=options.sample_rate, n_fft=options.n_fft, hop_length=options.hop_length,
            n_mels=options.n_mels, fmin=options.f_min, fmax=options.f_max)
        pictures.append(librosa.power_to_db(power, ref=1.0, top_db=options.top_db))
    return np.stack(pictures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    arguments = parser.parse_args()

    import dataclasses

    import torch

    from cnncli.config import load_config

    options = dataclasses.replace(load_config(REPO / "recipes" / "fsdd.yaml").data.audio, cache=None)
    files = sorted(arguments.folder.glob("*.wav"))[:arguments.limit]
    if not files:
        raise SystemExit(f"{arguments.folder}: no .wav files")
    print(f"{len(files)} files, {options.features} {options.n_mels} bands, n_fft {options.n_fft}, "
          f"hop {options.hop_length}, {options.sample_rate} Hz, {options.duration:g} s; "
          f"torch threads {torch.get_num_threads()}")

    cnncli_features(files[:8], options)  # import and first-call costs are not the point
    librosa_features(files[:8], options)

    started = time.perf_counter()
    ours = cnncli_features(files, options)
    cnncli_seconds = time.perf_counter() - started
    started = time.perf_counter()
    theirs = librosa_features(files, options)
    librosa_seconds = time.perf_counter() - started

    difference = np.abs(ours[:, 0].numpy() - theirs).max()
    print(f"cnncli batched (no cache): {cnncli_seconds:7.2f} s  ({len(files) / cnncli_seconds:7.0f} files/s)")
    print(f"librosa per file loop:     {librosa_seconds:7.2f} s  ({len(files) / librosa_seconds:7.0f} files/s)")
    print(f"speed-up: {librosa_seconds / cnncli_seconds:.1f}x; largest difference {difference:.3f} dB")


if __name__ == "__main__":
    main()
