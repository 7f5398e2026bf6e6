"""Windows slid over a long recording, each framed exactly as a whole file is in training.

The file is streamed in blocks, so memory does not grow with its length: an hour of audio costs
what a minute does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from cnncli.errors import CnncliError
from cnncli.modalities.audio.decoding import audio_length, iter_file_blocks, resample
from cnncli.modalities.audio.features import fit_length, target_length, too_loud
from cnncli.modalities.audio.options import AudioOptions

Spans = list[tuple[float, float]]


def sliding_windows(path: str, window: float, hop: float, options: AudioOptions,
                    encode: Callable[[torch.Tensor], torch.Tensor],
                    batch_size: int = 64) -> Iterator[tuple[Spans, torch.Tensor]]:
    """([(start_s, end_s), ...], encoded batch) chunks of up to `batch_size` windows.

    Each window is resampled and padded/cropped to `duration` exactly like a file of that length,
    then `encode`d (fixed-length waveforms at the recipe's rate -> the modality's encoded batch).
    Windows that would run past the end are left out; a recording shorter than one window gives
    one window over all of it.
    """
    if window <= 0 or hop <= 0:
        raise CnncliError(f"--window {window} --hop {hop}: both must be positive seconds")
    _, native_rate = audio_length(path)
    length = target_length(options)

    def featurise(segments: list[np.ndarray]) -> torch.Tensor:
        stacked = torch.from_numpy(np.stack(segments))  # (windows, frames, channels) at the native rate
        if not bool(torch.isfinite(stacked).all()):
            raise CnncliError(f"{path}: holds samples that are not finite numbers (NaN or infinity)")
        waveforms = resample(stacked.mean(dim=2), native_rate, options.sample_rate)
        waveforms = fit_length(waveforms, length, options.remove_dc)
        features = encode(waveforms)
        if bool(too_loud(waveforms, options).any()) or not bool(torch.isfinite(features).all()):
            raise CnncliError(f"{path}: its samples are too large to make finite features")
        return features

    spans: Spans = []
    segments: list[np.ndarray] = []
    for span, segment in _segments(path, native_rate, window, hop):
        spans.append(span)
        segments.append(segment)
        if len(segments) == batch_size:
            yield spans, featurise(segments)
            spans, segments = [], []
    if segments:
        yield spans, featurise(segments)


def _segments(path: str, native_rate: int, window: float, hop: float) -> Iterator[tuple[tuple[float, float], np.ndarray]]:
    """((start_s, end_s), samples at the native rate) for each window, from a buffer of blocks."""
    window_frames = max(1, round(window * native_rate))
    hop_frames = max(1, round(hop * native_rate))
    buffer = np.zeros((0, 1), dtype=np.float32)
    buffer_start = next_start = 0  # file frame of buffer[0]; first frame of the next window
    emitted = False
    for block in iter_file_blocks(path, max(window_frames, hop_frames, 16384)):
        buffer = np.concatenate([buffer, block]) if len(buffer) else block
        while next_start + window_frames <= buffer_start + len(buffer):
            offset = next_start - buffer_start
            yield (next_start / native_rate, (next_start + window_frames) / native_rate), \
                buffer[offset:offset + window_frames]
            emitted = True
            next_start += hop_frames
        drop = min(next_start - buffer_start, len(buffer))
        buffer, buffer_start = buffer[drop:], buffer_start + drop
    total = buffer_start + len(buffer)
    if total == 0:
        raise CnncliError(f"{path}: contains no audio (0 samples)")
    if not emitted:  # shorter than one window: the whole recording is the window
        yield (0.0, total / native_rate), buffer
