"""Sound drawn as the network reads it: the time x frequency picture after the stem, with seconds
on one axis and Hz (or MFCC coefficients) on the other; a heat map over it; a small version
with the waveform beneath for grids of samples.
"""

from __future__ import annotations

import numpy as np
import torch

from cnncli.modalities.audio.options import AudioOptions


def spectrogram_axis(axis, picture: np.ndarray, options: AudioOptions, ticks: bool = True):
    """Show a (bands, frames) picture on `axis`, row 0 at the bottom, time in seconds across and
    the bands' centre frequencies up; returns the image (for a colour bar) and its extent."""
    bands = picture.shape[0]
    nyquist = options.sample_rate / 2
    if options.features == "stft":
        extent, ylabel = (0, options.duration, 0, nyquist), "frequency (Hz)"
    else:
        extent = (0, options.duration, -0.5, bands - 0.5)
        ylabel = "MFCC coefficient" if options.features == "mfcc" else "mel band centre (Hz)"
    image = axis.imshow(picture, origin="lower", aspect="auto", extent=extent, cmap="magma", interpolation="nearest")
    if not ticks:
        axis.set_xticks([])
        axis.set_yticks([])
        return image, extent
    if options.features == "logmel":
        import librosa

        centres = librosa.mel_frequencies(options.n_mels + 2, fmin=options.f_min, fmax=options.f_max or nyquist,
                                          htk=False)[1:-1]
        rows = sorted(set(int(round(i)) for i in [k * (bands - 1) / 5 for k in range(6)]))
        axis.set_yticks(rows, [f"{centres[i]:.0f}" for i in rows])
    axis.set_xlabel("time (s)")
    axis.set_ylabel(ylabel)
    return image, extent


def spectrogram_png(picture: np.ndarray, options: AudioOptions, title: str, normalised: bool) -> bytes:
    """The picture the first convolution reads, with a colour bar in its unit."""
    from cnncli.output.plots import figure_png, plt

    figure, axis = plt.subplots(figsize=(7, 3.6))
    image, _ = spectrogram_axis(axis, picture, options)
    axis.set_title(title, fontsize=9)
    unit = "MFCC value" if options.features == "mfcc" else "dB"
    figure.colorbar(image, ax=axis, label=f"{unit}, normalised per band" if normalised else unit)
    return figure_png(figure)


def heatmap_png(picture: np.ndarray, heat: torch.Tensor, options: AudioOptions, caption: str) -> bytes:
    """A heat map (bands x frames) over the picture, on the same time and frequency axes."""
    from cnncli.output.plots import figure_png, overlay_heat, plt

    figure, axis = plt.subplots(figsize=(7, 3.6))
    _, extent = spectrogram_axis(axis, picture, options)
    overlay_heat(axis, heat, extent=extent, origin="lower")
    axis.set_title(caption, fontsize=9)
    return figure_png(figure)


def thumbnail(axis, picture: np.ndarray, waveform: torch.Tensor, options: AudioOptions) -> None:
    """The picture, and a strip beneath it with the waveform on the same time axis."""
    spectrogram_axis(axis, picture, options, ticks=False)
    strip = axis.inset_axes([0, -0.3, 1, 0.26])
    times = np.arange(len(waveform)) / options.sample_rate
    strip.plot(times, waveform.numpy(), linewidth=0.4, color="tab:blue")
    strip.set_xlim(0, options.duration)
    peak = float(waveform.abs().max()) or 1.0
    strip.set_ylim(-peak, peak)
    strip.axis("off")
