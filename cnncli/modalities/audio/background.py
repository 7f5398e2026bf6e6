"""The "background" class: noise-only training rows, so that a network can say "no word here".

`augment.background_class: 0.1` adds one such row per ten training rows. Each is made, not
read: a stretch of synthetic coloured noise (or of the `augment.background` recordings) at a
random level, the same for the same row every time (seeded by its index). Training
augmentation then varies it like any other row. `predict --segment` drops the events a network
calls background.
"""

from __future__ import annotations

import torch

from cnncli.data.sample import Sample
from cnncli.errors import CnncliError
from cnncli.modalities.audio.waveforms import coloured_noise

BACKGROUND_LABEL = "background"
LEVELS_DBFS = (-70.0, -20.0)  # power of a background row, uniform in dB
EXPONENTS = (0.0, 2.0)  # spectral slope of synthetic noise: white to brown
SEED = 15_000  # row i is made from the generator seeded SEED + i


def background_samples(training_rows: int, share: float) -> list[Sample]:
    """`share` noise rows per training row (none for share 0)."""
    count = round(training_rows * share)
    return [Sample(f"<background noise {index}>", BACKGROUND_LABEL, content=("background", index))
            for index in range(count)]


def synthesise_background(sample: Sample, length: int, recordings=None) -> torch.Tensor:
    """The (length,) waveform of one background row: noise of unit power scaled to a random level."""
    if not (isinstance(sample.content, tuple) and sample.content[:1] == ("background",)):
        raise CnncliError(f"{sample.locator}: an audio sample must be a file (got content of another kind)")
    generator = torch.Generator().manual_seed(SEED + int(sample.content[1]))
    low, high = LEVELS_DBFS
    level = low + (high - low) * float(torch.rand(1, generator=generator))
    if recordings is not None:
        noise = recordings.segments(1, length, generator, "cpu")[0]
        noise = noise / noise.pow(2).mean().sqrt().clamp(min=1e-12)
    else:
        low, high = EXPONENTS
        exponent = low + (high - low) * torch.rand(1, generator=generator)
        noise = coloured_noise(1, length, exponent, generator)[0]
    return noise * 10 ** (level / 20)
