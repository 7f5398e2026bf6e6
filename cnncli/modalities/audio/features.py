"""Waveforms -> time x frequency pictures, a whole batch per call (torchaudio on tensors).

Three kinds, picked by `data.audio.features`:

- logmel: power mel spectrogram in dB. The parameters match librosa's defaults
  (`librosa.feature.melspectrogram` + `librosa.power_to_db`): Slaney mel scale and area
  normalisation, centred frames with zero padding, periodic Hann window, power 2, ref 1.0,
  amin 1e-10, `top_db` below each spectrogram's own peak.
- stft: linear-frequency power spectrogram in dB (n_fft / 2 + 1 bands), same framing.
- mfcc: DCT-II (orthonormal) of the log-mel bands, as `librosa.feature.mfcc` computes it.

Output (N, 1, bands, frames): row 0 is the lowest frequency band, columns are frames in time.
"""

from __future__ import annotations

import dataclasses
import json

import torch
import torchaudio.functional as audio_functional
import torchaudio.transforms as transforms

from cnncli.modalities.audio.options import AudioOptions

AMIN = 1e-10  # librosa.power_to_db's floor, so silence maps to -100 dB instead of -inf
FEATURES_VERSION = 1  # bump when the computation changes, so cached features are recomputed


def target_length(options: AudioOptions) -> int:
    """Samples in one padded/cropped recording."""
    return max(1, round(options.duration * options.sample_rate))


def frame_count(options: AudioOptions) -> int:
    """Frames of a centred STFT over `target_length` samples."""
    return 1 + target_length(options) // options.hop_length


def band_count(options: AudioOptions) -> int:
    if options.features == "stft":
        return options.n_fft // 2 + 1
    return options.n_mfcc if options.features == "mfcc" else options.n_mels


def feature_params(options: AudioOptions) -> dict:
    """Every option that changes the numbers of an encoded sample (the cache key's second half)."""
    keep = ("sample_rate", "features", "n_fft", "hop_length", "win_length", "n_mels", "n_mfcc", "f_min", "f_max",
            "top_db", "duration")
    values = {name: value for name, value in dataclasses.asdict(options).items() if name in keep}
    if options.features != "mfcc":
        values.pop("n_mfcc")
    if options.features == "stft":
        for name in ("n_mels", "f_min", "f_max"):
            values.pop(name)
    return {"version": FEATURES_VERSION, **values}


def params_json(options: AudioOptions) -> str:
    return json.dumps(feature_params(options), sort_keys=True)


def fit_length(waveform: torch.Tensor, length: int) -> torch.Tensor:
    """Centre-crop a longer waveform or zero-pad a shorter one on both sides to `length` samples.

    Centring keeps a short word in the middle of the picture, where convolution padding is far.
    """
    size = waveform.shape[-1]
    if size > length:
        start = (size - length) // 2
        return waveform[..., start:start + length]
    if size < length:
        before = (length - size) // 2
        return torch.nn.functional.pad(waveform, (before, length - size - before))
    return waveform


class FeatureExtractor:
    """Callable: (N, samples) float waveforms at the recipe's rate -> (N, 1, bands, frames) dB."""

    def __init__(self, options: AudioOptions):
        self.options = options
        framing = dict(n_fft=options.n_fft, win_length=options.win_length or options.n_fft,
                       hop_length=options.hop_length, power=2.0, center=True, pad_mode="constant")
        if options.features == "stft":
            self.transform = transforms.Spectrogram(**framing)
        else:
            self.transform = transforms.MelSpectrogram(
                sample_rate=options.sample_rate, f_min=options.f_min, f_max=options.f_max, n_mels=options.n_mels,
                norm="slaney", mel_scale="slaney", **framing)
        self.dct = None
        if options.features == "mfcc":

            # create_dct gives (n_mels, n_mfcc); librosa's mfcc is DCT-II with norm="ortho".
            self.dct = audio_functional.create_dct(options.n_mfcc, options.n_mels, norm="ortho")

    def __call__(self, waveforms: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            power = self.transform(waveforms.float())
            decibels = power_to_db(power, self.options.top_db)
            if self.dct is not None:
                decibels = torch.einsum("nft,fc->nct", decibels, self.dct)
        return decibels.unsqueeze(1).contiguous()


def power_to_db(power: torch.Tensor, top_db: float | None) -> torch.Tensor:
    """librosa.power_to_db(ref=1.0) per spectrogram of a (N, bands, frames) batch.

    torchaudio's AmplitudeToDB applies `top_db` below the peak of the whole batch, so one loud
    recording would change its neighbours' pictures; here each spectrogram uses its own peak.
    """
    decibels = 10.0 * torch.log10(power.clamp(min=AMIN))
    if top_db is not None:
        peak = decibels.amax(dim=(-2, -1), keepdim=True)
        decibels = torch.maximum(decibels, peak - top_db)
    return decibels
