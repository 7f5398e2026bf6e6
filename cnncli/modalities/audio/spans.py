"""How `predict` cuts a long recording into rows: windows slid at fixed steps (--window, --hop;
windows.py) or the sounds found against its noise floor (--segment; events.py), each framed as a
training recording is; and which of the sounds found are no rows (the background class).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from cnncli.modalities.audio.background import BACKGROUND_LABEL
from cnncli.modalities.audio.events import find_events
from cnncli.modalities.audio.options import AudioOptions
from cnncli.modalities.audio.windows import sliding_windows
from cnncli.modalities.base import SpanBatch, Window


def recording_spans(path: str, options: AudioOptions, encode: Callable[[torch.Tensor], torch.Tensor],
                    batch_size: int, window: Window | None) -> Iterator[SpanBatch]:
    """The windows of `window` = (seconds, hop seconds), or without one the sounds found, streamed
    from the file; `encode` turns fixed-length waveforms at the recipe's rate into encoded rows."""
    if window is None:
        return find_events(path, options, encode, batch_size)
    seconds, hop = window
    return sliding_windows(path, seconds, hop, options, encode, batch_size)


def is_sound(label: str) -> bool:
    """A sound the network calls background (augment.background_class: noise-only training rows)
    is the noise between sounds, found where the noise floor rose: it gets no row."""
    return label != BACKGROUND_LABEL
