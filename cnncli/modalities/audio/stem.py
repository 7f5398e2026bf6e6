"""The audio stems: per-band normalisation, after the features when the bundle encodes waveforms.

Both keep their statistics in buffers named `mean` and `std`, so the weights of every audio
bundle carry `stem.mean` and `stem.std` whichever stem made them.
"""

from __future__ import annotations

import torch
from torch import nn

from cnncli.modalities.audio.features import Spectrogram
from cnncli.modalities.audio.options import AudioOptions


class BandNormalize(nn.Module):
    """(x - mean) / std per frequency band (row), with statistics stored as buffers."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 1, -1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


class WaveformStem(BandNormalize):
    """Waveforms (N, 1, samples) -> features (N, 1, bands, frames) -> per-band normalisation.

    The features run on the network's device as part of the forward pass. A batch that is
    already features (N, 1, bands, frames) is only normalised: training augmentation computes
    the features itself, to mask and warp them, and an exported network may start there.
    """

    def __init__(self, options: AudioOptions, mean: list[float], std: list[float]):
        super().__init__(mean, std)
        self.features = Spectrogram(options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = self.features(x[:, 0])
        return super().forward(x)
