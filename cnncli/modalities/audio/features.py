"""Waveforms -> time x frequency pictures, a whole batch per call (torchaudio on tensors).

Three kinds, picked by `data.audio.features`:

- logmel: power mel spectrogram in dB. The parameters match librosa's defaults
  (`librosa.feature.melspectrogram` + `librosa.power_to_db`): Slaney mel scale and area
  normalisation, centred frames with zero padding, periodic Hann window, power 2, ref 1.0,
  amin 1e-10, `top_db` below each spectrogram's own peak; with `level: peak`, ref = the
  spectrogram's own peak (librosa's ref=np.max), so a recording's level does not change it.
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
from torch import nn

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


FEATURE_KEYS = ("sample_rate", "features", "n_fft", "hop_length", "win_length", "n_mels", "n_mfcc", "f_min", "f_max",
                "top_db", "level", "duration", "remove_dc")


def feature_params(options: AudioOptions, keep: tuple[str, ...] = FEATURE_KEYS, kind: str | None = None) -> dict:
    """Every option that changes the numbers of an encoded sample (the cache key's second half);
    `keep` narrows them for encodings that stop before the features (kind "waveform")."""
    values = {name: value for name, value in dataclasses.asdict(options).items() if name in keep}
    if "n_mfcc" in values and options.features != "mfcc":
        values.pop("n_mfcc")
    if options.features == "stft":
        for name in ("n_mels", "f_min", "f_max"):
            values.pop(name, None)
    if not options.remove_dc:  # the default of bundles made before the key: their cache entries stay valid
        values.pop("remove_dc", None)
    return {"version": FEATURES_VERSION, **({"kind": kind} if kind else {}), **values}


def params_json(options: AudioOptions, keep: tuple[str, ...] = FEATURE_KEYS, kind: str | None = None) -> str:
    return json.dumps(feature_params(options, keep, kind), sort_keys=True)


def fit_length(waveform: torch.Tensor, length: int, remove_dc: bool = False) -> torch.Tensor:
    """Centre-crop a longer waveform or zero-pad a shorter one on both sides to `length` samples;
    with `remove_dc`, the mean of what is kept is subtracted first (per row of a batch), so that
    the padding continues the sound at its own zero line.

    Centring keeps a short word in the middle of the picture, where convolution padding is far.
    """
    size = waveform.shape[-1]
    if size > length:
        start = (size - length) // 2
        waveform = waveform[..., start:start + length]
    if remove_dc and size:
        waveform = waveform - waveform.mean(dim=-1, keepdim=True)
    if size < length:
        before = (length - size) // 2
        return torch.nn.functional.pad(waveform, (before, length - size - before))
    return waveform


LOUDEST = 1e16  # n_fft x the largest sample: past this a power spectrum can overflow float32


def too_loud(waveforms: torch.Tensor, options: AudioOptions) -> torch.Tensor:
    """Per row of (N, samples) waveforms: whether samples this large could give infinite power
    (float files may hold any value). An STFT bin's power is at most (n_fft x the largest sample)
    squared, and a mel band sums up to n_fft / 2 of them, so below LOUDEST every feature stays
    finite in float32. amax and amin, not aminmax(dim=-1): no |x| copy of the batch, and 25 times
    as fast as aminmax along a dimension (4.8 ms for 256 FSDD recordings, 2% of their prediction).
    A NaN counts as too loud: subtracting the mean (remove_dc) of samples near 3e38 overflows the
    sum, and the row comes out NaN."""
    if waveforms.shape[-1] == 0:
        return torch.zeros(waveforms.shape[:-1], dtype=torch.bool)
    return ~(torch.maximum(waveforms.amax(dim=-1), -waveforms.amin(dim=-1)) * options.n_fft < LOUDEST)


class PowerSpectrogram(nn.Module):
    """(..., samples) -> (..., n_fft / 2 + 1, frames) |STFT|^2: torchaudio's Spectrogram(power=2)
    with centred, zero-padded frames and a periodic Hann window, but the power taken as re^2 + im^2
    of the complex result rather than |z| (a square root) squared: the same values within float
    rounding, and the spectrogram of a batch of FSDD recordings in 1.4 ms instead of 3.3."""

    def __init__(self, n_fft: int, win_length: int, hop_length: int):
        super().__init__()
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        shape = waveforms.shape
        spectrum = torch.stft(waveforms.reshape(-1, shape[-1]), self.n_fft, self.hop_length, self.win_length,
                              self.window, center=True, pad_mode="constant", normalized=False, onesided=True,
                              return_complex=True)
        parts = torch.view_as_real(spectrum)
        power = parts[..., 0].square() + parts[..., 1].square()
        return power.reshape(*shape[:-1], *power.shape[-2:])


class Spectrogram(nn.Module):
    """(N, samples) float waveforms at the recipe's rate -> (N, 1, bands, frames) dB, as a module.

    Its tensors (window, mel filters, DCT) are non-persistent buffers rebuilt from the options, so
    they follow the network to its device but never enter a bundle's weights. `power` and
    `from_power` split the computation where training augmentation warps the frequency axis.
    """

    def __init__(self, options: AudioOptions):
        super().__init__()
        self.top_db = options.top_db
        self.relative = options.level == "peak"
        self.spectrogram = PowerSpectrogram(options.n_fft, options.win_length or options.n_fft, options.hop_length)
        self.mel = None
        if options.features != "stft":
            self.mel = transforms.MelScale(n_mels=options.n_mels, sample_rate=options.sample_rate, f_min=options.f_min,
                                           f_max=options.f_max, n_stft=options.n_fft // 2 + 1, norm="slaney",
                                           mel_scale="slaney")
        # create_dct gives (n_mels, n_mfcc); librosa's mfcc is DCT-II with norm="ortho".
        dct = audio_functional.create_dct(options.n_mfcc, options.n_mels, norm="ortho")
        self.register_buffer("dct", dct if options.features == "mfcc" else None, persistent=False)
        for module in self.modules():
            for name, buffer in list(module._buffers.items()):  # noqa: SLF001 - re-registered, not changed
                module.register_buffer(name, buffer, persistent=False)

    def power(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(N, samples) -> (N, n_fft / 2 + 1, frames) linear power spectrogram, in float32 even
        under autocast (powers overflow float16)."""
        with torch.autocast(waveforms.device.type, enabled=False):
            return self.spectrogram(waveforms.float())

    def from_power(self, power: torch.Tensor) -> torch.Tensor:
        """Linear power spectrogram -> (N, 1, bands, frames) features, in float32."""
        with torch.autocast(power.device.type, enabled=False):
            return self._from_power(power.float())

    def _from_power(self, power: torch.Tensor) -> torch.Tensor:
        if self.mel is not None:
            power = self.mel(power)
        decibels = power_to_db(power, self.top_db, self.relative)
        if self.dct is not None:
            decibels = torch.einsum("nft,fc->nct", decibels, self.dct)
        return decibels.unsqueeze(1).contiguous()

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.from_power(self.power(waveforms))


class FeatureExtractor:
    """Callable: (N, samples) float waveforms at the recipe's rate -> (N, 1, bands, frames) dB."""

    def __init__(self, options: AudioOptions):
        self.options = options
        self.module = Spectrogram(options)

    def __call__(self, waveforms: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(waveforms)


def power_to_db(power: torch.Tensor, top_db: float | None, relative: bool = False) -> torch.Tensor:
    """librosa.power_to_db(ref=1.0) per spectrogram of a (N, bands, frames) batch; with `relative`,
    ref=np.max: dB below the spectrogram's own loudest cell, so that its level does not matter.

    torchaudio's AmplitudeToDB applies `top_db` below the peak of the whole batch, so one loud
    recording would change its neighbours' pictures; here each spectrogram uses its own peak.
    """
    decibels = 10.0 * torch.log10(power.clamp(min=AMIN))
    if top_db is not None or relative:
        peak = decibels.amax(dim=(-2, -1), keepdim=True)
        if top_db is not None:
            decibels = torch.maximum(decibels, peak - top_db)
        if relative:
            decibels = decibels - peak
    return decibels
