"""The sounds in a long recording, found against the recording's own noise floor.

The file is read in blocks and measured in 10 ms frames (mono, at its own rate). A frame is
sound when its energy (smoothed over 30 ms; with `remove_dc`, about each frame's own mean)
stands `event_threshold_db` above the noise floor, the 10th percentile of the frame energies within 5 s on either side, and within RANGE_DB of the
loudest frame there (so that a recording padded with digital silence does not turn hiss into
words). Sounds closer than `event_min_gap` join; sounds shorter than `event_min_length` are
dropped. Each sound is then cut out with a small margin and encoded exactly as a file holding
only that stretch would be: resampled, mixed to mono, padded or centre-cropped to the training
duration, as the training recordings were.

Decisions wait for 5 s of audio after a frame, and only the audio of that look-ahead and of the
sound in progress is kept, so memory stays flat on an hour of audio and events come out while
the file is still being read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from cnncli.errors import CnncliError
from cnncli.modalities.audio.decoding import audio_length, iter_file_blocks, resample
from cnncli.modalities.audio.features import fit_length, target_length
from cnncli.modalities.audio.options import AudioOptions

Spans = list[tuple[float, float]]

FRAME_SECONDS = 0.01
SMOOTH_FRAMES = 3  # energies are averaged over this many frames (30 ms) before the comparison
FLOOR_SECONDS = 5.0  # the noise floor of a frame is measured this far on either side of it
FLOOR_PERCENTILE = 10.0  # a recording is at its noise floor at least this share of the time
FLOOR_STEP_SECONDS = 0.5  # the floor is measured once per step and held over it
RANGE_DB = 50.0  # frames this far below the loudest frame within FLOOR_SECONDS are never sound
MARGIN_SECONDS = 0.1  # audio kept on either side of a sound when it is cut out
LONGEST_SECONDS = 30.0  # a sound that goes on longer is cut here (memory stays bounded)
SILENCE_POWER = 1e-20  # added to every frame's power, so digital silence is -200 dB, not -inf


class EventDetector:
    """Frames in, (start, end) sample spans of finished sounds out; keeps the audio it still needs."""

    def __init__(self, rate: int, options: AudioOptions):
        self.rate = rate
        self.frame = max(1, round(FRAME_SECONDS * rate))
        self.threshold_db = options.event_threshold_db
        self.remove_dc = options.remove_dc
        self.gap = max(1, round(options.event_min_gap / FRAME_SECONDS))
        self.shortest = max(1, round(options.event_min_length / FRAME_SECONDS))
        self.longest = round(LONGEST_SECONDS / FRAME_SECONDS)
        self.reach = round(FLOOR_SECONDS / FRAME_SECONDS)
        self.step = round(FLOOR_STEP_SECONDS / FRAME_SECONDS)
        self.audio = np.zeros(0, dtype=np.float32)  # samples from audio_start on
        self.audio_start = 0
        self.energy = np.zeros(0)  # dB of frames from energy_start on (smoothed when decided)
        self.energy_start = 0
        self.decided = 0  # frames before this one have been judged
        self.open: tuple[int, int] | None = None  # (first, last) sounding frame of the sound in progress

    def push(self, samples: np.ndarray) -> list[tuple[tuple[int, int], np.ndarray]]:
        """Add mono samples; (sample span, samples cut out) of each sound that is now finished."""
        self.audio = np.concatenate([self.audio, samples])
        have = (self.audio_start + len(self.audio)) // self.frame
        first_new = self.energy_start + len(self.energy)
        if have > first_new:
            begin = first_new * self.frame - self.audio_start
            frames = self.audio[begin:begin + (have - first_new) * self.frame].reshape(-1, self.frame)
            frames = frames.astype(np.float64)
            if self.remove_dc:  # a sound card's offset is not sound: it would raise the floor of every frame
                frames = frames - frames.mean(axis=1, keepdims=True)
            power = frames ** 2
            self.energy = np.concatenate([self.energy, 10 * np.log10(power.mean(axis=1) + SILENCE_POWER)])
        return self._cut(self._decide(until=have - self.reach))

    def finish(self) -> list[tuple[tuple[int, int], np.ndarray]]:
        """The sounds left once the file has ended (the floor then looks only backwards)."""
        spans = self._decide(until=self.energy_start + len(self.energy))
        if self.open is not None:
            spans += self._close(*self.open)
            self.open = None
        return self._cut(spans)

    def _cut(self, spans: list[tuple[int, int]]) -> list[tuple[tuple[int, int], np.ndarray]]:
        cuts = [(span, self.segment(span)) for span in spans]
        self._forget()
        return cuts

    def segment(self, span: tuple[int, int]) -> np.ndarray:
        """The samples of a sound with MARGIN_SECONDS either side (as far as the file goes)."""
        margin = round(MARGIN_SECONDS * self.rate)
        begin = max(span[0] - margin, self.audio_start) - self.audio_start
        return self.audio[begin:span[1] + margin - self.audio_start]

    def _decide(self, until: int) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        while self.decided < until:
            stop = min(until, self.decided + self.step)
            threshold = self._threshold(self.decided)
            for frame, level in zip(range(self.decided, stop), self._smoothed(self.decided, stop)):
                spans += self._judge(frame, level > threshold)
            self.decided = stop
        return spans

    def _threshold(self, frame: int) -> float:
        """dB a frame must exceed around `frame`: above the noise floor, within range of the loudest."""
        low = max(frame - self.reach, self.energy_start) - self.energy_start
        around = self.energy[low:frame + self.step + self.reach - self.energy_start]
        return max(float(np.percentile(around, FLOOR_PERCENTILE)) + self.threshold_db, float(around.max()) - RANGE_DB)

    def _smoothed(self, first: int, stop: int) -> np.ndarray:
        """dB of frames first..stop-1, each the mean power of SMOOTH_FRAMES frames around it."""
        half = SMOOTH_FRAMES // 2
        low = max(first - half, self.energy_start)
        high = min(stop + half, self.energy_start + len(self.energy))
        power = 10 ** (self.energy[low - self.energy_start:high - self.energy_start] / 10)
        sums = np.concatenate([[0.0], np.cumsum(power)])
        frames = np.arange(first, stop)
        begin, end = np.maximum(frames - half, low) - low, np.minimum(frames + half + 1, high) - low
        return 10 * np.log10((sums[end] - sums[begin]) / (end - begin))

    def _judge(self, frame: int, sounding: bool) -> list[tuple[int, int]]:
        """Advance the sound in progress by one frame; the spans it finishes."""
        finished: list[tuple[int, int]] = []
        if self.open is not None:
            first, last = self.open
            if frame - last > self.gap or frame - first >= self.longest:
                finished = self._close(first, last)
                self.open = None
        if sounding:
            self.open = (self.open[0], frame) if self.open is not None else (frame, frame)
        return finished

    def _close(self, first: int, last: int) -> list[tuple[int, int]]:
        if last + 1 - first < self.shortest:
            return []
        return [(first * self.frame, (last + 1) * self.frame)]

    def _forget(self) -> None:
        """Drop energies and audio no decision or cut will look at again."""
        keep_frame = self.decided - self.reach - SMOOTH_FRAMES
        if keep_frame > self.energy_start:
            self.energy = self.energy[keep_frame - self.energy_start:]
            self.energy_start = keep_frame
        keep_sample = min(self.decided, self.open[0] if self.open else self.decided) * self.frame
        keep_sample -= round(MARGIN_SECONDS * self.rate) + self.frame
        if keep_sample > self.audio_start:
            self.audio = self.audio[keep_sample - self.audio_start:]
            self.audio_start = keep_sample


def find_events(path: str, options: AudioOptions, encode: Callable[[torch.Tensor], torch.Tensor],
                batch_size: int = 64) -> Iterator[tuple[Spans, torch.Tensor]]:
    """([(start_s, end_s), ...], encoded batch) for the sounds of a recording, in order, a batch
    as soon as a block of the file has finished some (or `batch_size` of them)."""
    _, rate = audio_length(path)
    detector = EventDetector(rate, options)
    length = target_length(options)
    pending: list[tuple[tuple[int, int], torch.Tensor]] = []

    def cut(cuts: list[tuple[tuple[int, int], np.ndarray]]) -> None:
        for span, samples in cuts:
            waveform = resample(torch.from_numpy(np.ascontiguousarray(samples)), rate, options.sample_rate)
            pending.append((span, fit_length(waveform, length, options.remove_dc)))

    def batches() -> Iterator[tuple[Spans, torch.Tensor]]:
        while pending:
            chunk, pending[:] = pending[:batch_size], pending[batch_size:]
            yield [(start / rate, end / rate) for (start, end), _ in chunk], encode(torch.stack([w for _, w in chunk]))

    read = 0
    for block in iter_file_blocks(path, max(16384, round(rate))):
        read += len(block)
        cut(detector.push(block.mean(axis=1)))
        yield from batches()
    if read == 0:
        raise CnncliError(f"{path}: contains no audio (0 samples)")
    cut(detector.finish())
    yield from batches()
