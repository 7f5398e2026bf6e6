"""Log-mel features for every FSDD recording: cnncli's batched path vs a per-file librosa loop,
timed warm and cold, each labelled.

Both sides decode, resample, pad/crop to one second and compute the same log-mel spectrogram
(the parameters of recipes/fsdd.yaml), cache off. Each side's first calls pay one-time costs
(librosa: numba compilation, filter banks; cnncli: torchaudio's filter bank, FFT plans), so a
single timing depends on what ran before it. This script therefore prints two figures per side:

- warm: in one process, after one warm-up file on each side, the time for every file;
- cold: in a fresh process per side, the time from its first call to its last file (first-call
  set-up included); the imports are timed apart and printed beside it.

The recordings are read once before any timing, so both sides find them in the page cache.

    python bench/audio_features.py [--folder ../shared/data/fsdd/recordings] [--limit N]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports, for a cold run's import time

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "fsdd" / "recordings"


def feature_options():
    import dataclasses

    sys.path.insert(0, str(REPO))
    from cnncli.recipe.config import load_config

    return dataclasses.replace(load_config(REPO / "recipes" / "fsdd.yaml").data.audio)  # (no cache: none given)


def cnncli_features(files: list[Path], options):
    from cnncli.data.sample import Sample
    from cnncli.modalities.audio import AudioModality

    modality = AudioModality(options)
    encoded = modality.encode_many([Sample(str(path)) for path in files])
    assert not encoded.failures, encoded.failures
    return modality.featurize(encoded.tensor)[:, 0].numpy()  # the spectrograms, as the stem computes them


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


SIDES = {"cnncli": cnncli_features, "librosa": librosa_features}


def cold(side: str, files: list[Path], settings: dict) -> dict:
    """In this fresh process: the side's imports (librosa's side imports nothing of cnncli's),
    then the time from its first call to its last file."""
    if side == "cnncli":
        sys.path.insert(0, str(REPO))
        from cnncli.modalities.audio import AudioModality  # noqa: F401
        from cnncli.modalities.audio.options import AudioOptions

        options = AudioOptions(**settings)
    else:
        import types

        import librosa  # noqa: F401

        options = types.SimpleNamespace(**settings)
    imported = time.perf_counter()
    SIDES[side](files, options)
    return {"imports": imported - STARTED, "seconds": time.perf_counter() - imported}


def cold_in_fresh_process(side: str, arguments, options) -> dict:
    import dataclasses

    command = [sys.executable, str(Path(__file__).resolve()), "--cold", side, "--folder", str(arguments.folder),
               "--options", json.dumps(dataclasses.asdict(options))]
    if arguments.limit:
        command += ["--limit", str(arguments.limit)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    parser.add_argument("--cold", choices=sorted(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    files = sorted(arguments.folder.glob("*.wav"))[:arguments.limit]
    if not files:
        raise SystemExit(f"{arguments.folder}: no .wav files")
    if arguments.cold:
        print(json.dumps(cold(arguments.cold, files, json.loads(arguments.options))))
        return

    for path in files:  # into the page cache, for both sides alike
        path.read_bytes()
    options = feature_options()
    cold_runs = {side: cold_in_fresh_process(side, arguments, options) for side in SIDES}

    import torch

    print(f"{len(files)} files, {options.features} {options.n_mels} bands, n_fft {options.n_fft}, "
          f"hop {options.hop_length}, {options.sample_rate} Hz, {options.duration:g} s; "
          f"torch threads {torch.get_num_threads()}")
    for side in SIDES.values():
        side(files[:1], options)  # the warm-up file
    warm, results = {}, {}
    for name, side in SIDES.items():
        started = time.perf_counter()
        results[name] = side(files, options)
        warm[name] = time.perf_counter() - started

    difference = np.abs(results["cnncli"] - results["librosa"]).max()
    print(f"{'':<52}{'cnncli':>10}{'librosa':>10}{'speed-up':>10}")
    for label, figures in (("warm (one process, after one warm-up file each)", warm),
                           ("cold (fresh process per side, first call included)",
                            {side: run["seconds"] for side, run in cold_runs.items()})):
        print(f"{label:<52}{figures['cnncli']:9.2f}s{figures['librosa']:9.2f}s"
              f"{figures['librosa'] / figures['cnncli']:9.1f}x")
    print(f"{'imports alone (fresh process, not in the cold times)':<52}"
          f"{cold_runs['cnncli']['imports']:9.2f}s{cold_runs['librosa']['imports']:9.2f}s")
    print(f"files/s warm: cnncli {len(files) / warm['cnncli']:.0f}, librosa {len(files) / warm['librosa']:.0f}; "
          f"largest difference {difference:.3f} dB")


if __name__ == "__main__":
    main()
