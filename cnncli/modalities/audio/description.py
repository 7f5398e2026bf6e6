"""What an audio bundle says about its preprocessing: the line `inspect` shows, and the steps a
server must take to make the picture an exported network reads (`cnncli export`)."""

from __future__ import annotations

from typing import Any

from cnncli.modalities.audio.features import band_count, frame_count, target_length
from cnncli.modalities.audio.options import AudioOptions


def describe(options: AudioOptions, waveforms: bool) -> str:
    """One line: the encoding (a waveform whose features the stem computes, or the dB picture),
    and every parameter that makes the picture."""
    bands, frames = band_count(options), frame_count(options)
    f_max = options.f_max or options.sample_rate / 2
    kind = {"logmel": f"{options.n_mels} mel bands {options.f_min:g}-{f_max:g} Hz (Slaney), dB",
            "stft": f"{bands} linear bands 0-{options.sample_rate / 2:g} Hz, dB",
            "mfcc": f"{options.n_mfcc} MFCCs of {options.n_mels} mel bands {options.f_min:g}-{f_max:g} Hz"}
    top_db = f", top_db {options.top_db:g}" if options.top_db is not None else ""
    top_db += ", re its peak" if options.level == "peak" else ""
    norm = "per-band normalisation" if options.normalize else "no normalisation"
    stem = f"waveform 1x{target_length(options)} -> (in the stem) " if waveforms else ""
    return (f"audio {stem}{options.features} 1x{bands}x{frames}: {options.sample_rate} Hz mono, "
            f"{options.duration:g} s {'DC removed, ' if options.remove_dc else ''}pad/centre-crop, "
            f"n_fft {options.n_fft} hop {options.hop_length} "
            f"win {options.win_length or options.n_fft}, {kind[options.features]}{top_db}, {norm}")


def preprocessing(options: AudioOptions, mean: list[float], std: list[float]) -> dict[str, Any]:
    """The waveform and spectrogram parameters that make the encoded dB picture, as JSON; the
    network normalises each band itself (with `mean` and `std`)."""
    spectrogram = {"n_fft": options.n_fft, "hop_length": options.hop_length,
                   "win_length": options.win_length or options.n_fft, "window": "periodic Hann",
                   "center": True, "pad_mode": "constant (zeros)", "power": 2.0}
    if options.features != "stft":
        spectrogram.update(n_mels=options.n_mels, f_min=options.f_min,
                           f_max=options.f_max or options.sample_rate / 2, mel_scale="slaney", mel_norm="slaney")
    if options.features == "mfcc":
        spectrogram.update(n_mfcc=options.n_mfcc, dct="type II, orthonormal, of the dB mel bands")
    return {"steps": ["decode the audio file", "mix to mono (mean of the channels)",
                      f"resample to {options.sample_rate} Hz (windowed sinc, as torchaudio.functional.resample)",
                      *(["subtract the mean (the DC offset) of what is kept"] if options.remove_dc else []),
                      f"centre-crop or zero-pad both sides to {target_length(options)} samples",
                      f"{options.features} power spectrogram (librosa's conventions)",
                      "decibels: 10 log10(max(power, 1e-10))"
                      + (", less the recording's peak (its loudest cell is 0 dB)" if options.level == "peak" else "")
                      + ", floored at top_db below the peak",
                      "shape (1, bands, frames), row 0 the lowest band"],
            "sample_rate": options.sample_rate, "duration": options.duration, "remove_dc": options.remove_dc,
            "features": options.features,
            "spectrogram": spectrogram, "top_db": options.top_db, "level": options.level, "mean": mean, "std": std,
            "normalization": "inside the graph: (decibels - mean) / std per band"}
