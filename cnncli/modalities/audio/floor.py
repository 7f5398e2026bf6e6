"""How loud a recording is when nothing sounds: its noise floor, measured so that it holds when the
recording's quiet parts differ (gated clips cut into room noise, fades, a fan switched on, hum, music).

Frames are 10 ms. A frame's level is the power of the band the network hears above mains hum
(BAND_LOW_HZ up to the recipe's Nyquist frequency or `f_max`), through a 20 ms Hann window
centred on the frame: hum, rumble and a door's thud below that band do not raise it, nor does a
DC offset (unless `remove_dc` is off: then the offset counts, as it did in training).

The floor around a moment is the level most of the frames near it rest at: of the levels within
FLOOR_SECONDS before it (and the look-ahead after it), each smoothed over 30 ms, the range of
+-MODE_REACH_DB that holds the most, later frames weighing more (half-life RECENCY_SECONDS); the
floor is the 10th percentile of the levels in that range. Not the 10th percentile of all the
levels: in a recording with two quiet levels (gated clips, whose near-digital silence lies 25 dB
under the room noise between them) that sits at the lower one, and the room noise counts as
sound. Where the clips' silence is as common as the room noise, either may be the floor. The
choice, and what else was tried (minimum statistics, the highest common level, hysteresis,
splitting long sounds at their valleys, a lower threshold), was made by measurement:
docs/BENCHMARKS.md, "Sounds in any recording".

The band is also split into SUB_BANDS log-spaced sub-bands from SUB_BAND_LOW_HZ up. A word in
broadband noise puts its energy in a few of them (its pitch and formants), where it stands far
higher above the noise than over the whole band. Each sub-band's floor is the median of its
levels over the same stretch, later frames weighing more: in steady noise that is where the noise
rests, and where a sub-band holds something that sounds often (music's partials) it rises with it.
"""

from __future__ import annotations

import numpy as np

from cnncli.modalities.audio.options import AudioOptions

FRAME_SECONDS = 0.01
BAND_LOW_HZ = 200.0  # below this: mains hum and its first harmonics, rumble, a door's thud
FLOOR_SECONDS = 8.0  # the floor of a moment is measured over this much of the recording before it
RECENCY_SECONDS = 3.0  # a frame this much older weighs half as much in the floor
MODE_REACH_DB = 4  # the floor is in the range of +- this many dB that holds the most frames
FLOOR_PERCENTILE = 10.0  # ... at this percentile of the frames in that range
SUB_BANDS = 8  # the band is split into this many log-spaced sub-bands (events.py: a sound's extent)
SUB_BAND_LOW_HZ = 250.0  # the first sub-band starts here: the 20 ms window's main lobe (+-100 Hz) carries
# a door's thud below BAND_LOW_HZ into a narrow sub-band just above it (from 200 Hz: false events)
SILENCE_POWER = 1e-20  # added to every frame's power, so digital silence is -200 dB, not -inf


class BandLevel:
    """dB of 10 ms frames of mono samples at `rate`: the power between BAND_LOW_HZ and what the
    network hears, through a 20 ms Hann window centred on each frame (column 0), and in each of the
    sub-bands (the columns after it)."""

    def __init__(self, rate: int, options: AudioOptions):
        self.frame = max(1, round(FRAME_SECONDS * rate))
        size = 2 * self.frame
        self.window = np.hanning(size + 1)[:-1]  # periodic
        frequencies = np.fft.rfftfreq(size, 1 / rate)
        high = min(options.f_max or options.sample_rate / 2, rate / 2)
        band = (frequencies >= BAND_LOW_HZ) & (frequencies <= high)
        self.band = band if band.any() else frequencies > 0
        edges = SUB_BAND_LOW_HZ * (high / SUB_BAND_LOW_HZ) ** (np.arange(SUB_BANDS + 1) / SUB_BANDS)
        bands = [(frequencies >= low) & ((frequencies < top) | ((top == edges[-1]) & (frequencies <= top)))
                 for low, top in zip(edges[:-1], edges[1:])] if high > SUB_BAND_LOW_HZ else []
        # rows: the band, then each sub-band that holds a frequency of the transform
        self.sums = np.stack([self.band, *[sub for sub in bands if sub.any()]]).astype(np.float64).T
        self.scale = 2 / (size * float((self.window ** 2).sum()))
        self.keep_offset = not options.remove_dc

    @property
    def lead(self) -> int:
        """Samples before a frame's start that its window reads."""
        return self.frame // 2

    @property
    def reach(self) -> int:
        """Samples from a frame's start to the end of its window."""
        return 2 * self.frame - self.lead

    def __call__(self, samples: np.ndarray, count: int) -> np.ndarray:
        """The levels of `count` consecutive frames; `samples` start `lead` before the first frame
        and are zero-padded here where they run short (the ends of the recording)."""
        needed = (count - 1) * self.frame + 2 * self.frame
        if len(samples) < needed:
            samples = np.concatenate([samples, np.zeros(needed - len(samples), dtype=samples.dtype)])
        starts = np.arange(count)[:, None] * self.frame + np.arange(2 * self.frame)[None, :]
        windows = samples[starts].astype(np.float64)
        power = (np.abs(np.fft.rfft(windows * self.window, axis=1)) ** 2) @ self.sums * self.scale
        if self.keep_offset:  # a sound card's offset counted as sound, as before `remove_dc`
            own = windows[:, self.lead:self.lead + self.frame]
            power[:, 0] += own.mean(axis=1) ** 2
        return 10 * np.log10(power + SILENCE_POWER)


def recency(count: int) -> np.ndarray:
    """Weights of `count` frames, oldest first: halved every RECENCY_SECONDS of age."""
    return 0.5 ** (np.arange(count)[::-1] * FRAME_SECONDS / RECENCY_SECONDS)


def band_floors(levels: np.ndarray) -> np.ndarray:
    """dB each sub-band rests at over `levels` (frames x sub-bands, oldest first): its median, later
    frames weighing more."""
    order = np.argsort(levels, axis=0, kind="stable")
    weights = np.cumsum(recency(len(levels))[order], axis=0)
    middle = (weights < weights[-1] / 2).sum(axis=0)
    return np.take_along_axis(levels, order, axis=0)[middle, np.arange(levels.shape[1])]


def noise_floor(levels: np.ndarray) -> float:
    """dB the recording rests at over `levels` (oldest first): in the +-MODE_REACH_DB range holding
    the most frames, later frames weighing more, the FLOOR_PERCENTILE-th percentile there."""
    weights = recency(len(levels))
    bins = np.floor(levels).astype(np.int64)
    lowest = int(bins.min())
    counts = np.bincount(bins - lowest, weights=weights)
    reach = MODE_REACH_DB
    mass = np.convolve(np.concatenate([np.zeros(reach), counts, np.zeros(reach)]), np.ones(2 * reach + 1), "valid")
    centre = lowest + int(np.argmax(mass))
    inside = levels[(bins >= centre - reach) & (bins <= centre + reach)]
    return float(np.percentile(inside, FLOOR_PERCENTILE))

