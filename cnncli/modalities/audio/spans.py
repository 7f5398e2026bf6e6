"""How `predict` cuts a long recording into rows: windows slid at fixed steps (--window, --hop;
windows.py) or the sounds found against its noise floor (--segment; events.py), in a file or in
a stream as it arrives (--stream; stream.py), each framed as a training recording is; and which
of the sounds found are no rows (the background class).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import torch

from cnncli.errors import CnncliError
from cnncli.modalities.audio.background import BACKGROUND_LABEL
from cnncli.modalities.audio.events import DEFAULT_LATENCY, find_events
from cnncli.modalities.audio.options import AudioOptions
from cnncli.modalities.audio.stream import stream_events
from cnncli.modalities.audio.windows import sliding_windows
from cnncli.modalities.base import SpanBatch, Window


def recording_spans(path: str, options: AudioOptions, encode: Callable[[torch.Tensor], torch.Tensor],
                    batch_size: int, window: Window | None, latency: float | None = None) -> Iterator[SpanBatch]:
    """The windows of `window` = (seconds, hop seconds), or without one the sounds found, streamed
    from the file; `encode` turns fixed-length waveforms at the recipe's rate into encoded rows."""
    if window is None:
        return find_events(path, options, encode, batch_size, DEFAULT_LATENCY if latency is None else latency)
    seconds, hop = window
    return sliding_windows(path, seconds, hop, options, encode, batch_size)


def streamed_spans(locator: str, raw: str | None, options: AudioOptions,
                   encode: Callable[[torch.Tensor], torch.Tensor], latency: float | None) -> Iterator[SpanBatch]:
    """The sounds of a recording read as it arrives, from standard input ('-') or a file, one at
    a time as each is decided; `raw` describes headerless PCM (stream.py)."""
    latency = DEFAULT_LATENCY if latency is None else latency
    if locator == "-":
        yield from stream_events(sys.stdin.buffer, "<stdin>", raw, options, encode, latency)
        return
    try:
        handle = open(locator, "rb")  # noqa: SIM115 - closed below; an error opening it is the user's
    except OSError as error:
        raise CnncliError(f"{locator}: cannot be read ({error.strerror or error})") from None
    with handle:
        yield from stream_events(handle, locator, raw, options, encode, latency)


def is_sound(label: str) -> bool:
    """A sound the network calls background (augment.background_class: noise-only training rows)
    is the noise between sounds, found where the noise floor rose: it gets no row."""
    return label != BACKGROUND_LABEL
