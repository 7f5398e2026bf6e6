"""The sounds in a long recording, found against the recording's own noise floor.

The recording comes in blocks (a file read block by block, or a stream as it arrives: stream.py)
and is measured in 10 ms frames, mono, at its own rate (each frame's level: floor.py). A frame is
sound when its level (smoothed over 30 ms) stands `event_threshold_db` above the noise floor
around it (floor.py) and within RANGE_DB of the loudest frame there (so that a recording padded
with digital silence does not turn hiss into words). A sound reaches further, by the same margin
but per sub-band: a frame within range where some sub-band stands `event_threshold_db` above that
sub-band's own floor (floor.py) is sound too when the frames joining it to a sound frame, before
it or within the look-ahead after it, all are so. A word at 0 to 5 dB SNR in broadband noise
stands 10 dB above the floor over the whole band for a few frames only, too few for a sound, but
in the sub-band of its pitch or a formant for much of its length; a chord struck in a music bed
lifts a sub-band as much, but not the whole band, so it starts no sound of its own. Sub-bands
extend sounds only where the look-ahead is SUB_BAND_AHEAD_SECONDS or more (the default latency;
not --latency 0.5). Sounds closer than `event_min_gap` join; sounds shorter than
`event_min_length` are dropped. Each sound is then cut out with a small margin and encoded
exactly as a file holding only that stretch would be: resampled, mixed to mono, padded or
centre-cropped to the training duration, as the training recordings were.

A sound is decided `latency` seconds after it ends: the pause that ends it (`event_min_gap`, or
the latency if that is shorter), then the rest of the latency as look-ahead for the floor. Each
decision reads only the recording up to that point, so a file and the same audio streamed live
give the same sounds at the same latency, whatever the blocks; and only the audio of the floor's
past, the look-ahead and the sound in progress is kept, so memory stays flat on an hour of audio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from cnncli.errors import CnncliError
from cnncli.modalities.audio.decoding import audio_length, iter_file_blocks, resample
from cnncli.modalities.audio.features import fit_length, target_length
from cnncli.modalities.audio.floor import (
    FLOOR_SECONDS,
    FRAME_SECONDS,
    SILENCE_POWER,
    BandLevel,
    band_floors,
    noise_floor,
)
from cnncli.modalities.audio.options import AudioOptions

Spans = list[tuple[float, float]]
Cut = tuple[tuple[int, int], np.ndarray]  # (start, end) samples of a sound, and its samples with margins

SMOOTH_FRAMES = 3  # levels are averaged over this many frames (30 ms) before the comparison
STEP_FRAMES = 10  # the floor is measured once per this many frames (0.1 s) and held over them
RANGE_DB = 50.0  # frames this far below the loudest frame around them are never sound
MARGIN_SECONDS = 0.1  # audio kept on either side of a sound when it is cut out
LONGEST_SECONDS = 30.0  # a sound that goes on longer is cut here (memory stays bounded)
DEFAULT_LATENCY = 1.0  # seconds from a sound's end to its decision, unless asked (--latency)
MIN_LATENCY = MARGIN_SECONDS  # a sound's margin after it must be there when it is decided
MAX_LATENCY = 10.0  # the look-ahead's audio is kept: bounded, as the rest
# Sub-bands extend a sound only with this much look-ahead or more: with less (--latency 0.5 leaves
# 0.17 s), chord strikes that reach the band's threshold were extended into sounds (a music bed,
# five voices: 0.945 found and 7.8% false events, against 0.960 and 6.3% with the band alone).
SUB_BAND_AHEAD_SECONDS = 0.5
READ_PAST_FRAMES = 3  # a frame's window (15 ms) and the smoothing (10 ms) read this far past it


class EventDetector:
    """Mono samples in, each finished sound out as (sample span, samples cut out with margins);
    keeps only the audio and levels it still needs."""

    def __init__(self, rate: int, options: AudioOptions, latency: float = DEFAULT_LATENCY):
        if not MIN_LATENCY <= latency <= MAX_LATENCY:
            raise CnncliError(f"--latency {latency}: from {MIN_LATENCY:g} seconds (the margin cut with a sound) "
                              f"to {MAX_LATENCY:g}")
        self.rate = rate
        self.level = BandLevel(rate, options)
        self.frame = self.level.frame
        self.threshold_db = options.event_threshold_db
        latency_frames = round(latency / FRAME_SECONDS)
        self.gap = max(1, min(round(options.event_min_gap / FRAME_SECONDS), latency_frames))
        # frames of look-ahead for the floor: the rest of the latency, less what a frame's window
        # and the smoothing read past it, so that a sound is decided `latency` after its end
        self.ahead = max(0, latency_frames - self.gap - READ_PAST_FRAMES)
        self.sub_bands = self.ahead * FRAME_SECONDS >= SUB_BAND_AHEAD_SECONDS - 1e-9  # whether they extend sounds
        self.shortest = max(1, round(options.event_min_length / FRAME_SECONDS))
        self.longest = round(LONGEST_SECONDS / FRAME_SECONDS)
        self.reach = round(FLOOR_SECONDS / FRAME_SECONDS)
        self.margin = round(MARGIN_SECONDS * rate)
        self.audio = np.zeros(0, dtype=np.float32)  # samples from audio_start on
        self.audio_start = 0
        self.energy = np.zeros((0, self.level.sums.shape[1]))  # dB of frames from energy_start on: band, sub-bands
        self.energy_start = 0
        self.decided = 0  # frames before this one have been judged
        # (first frame, dB the band must exceed, dB each sub-band must exceed) of the floor's current step
        self.step: tuple[int, float, np.ndarray] = (-1, 0.0, np.zeros(0))
        self.sounding = False  # whether the last frame judged was sound
        self.open: tuple[int, int] | None = None  # (first, last) sounding frame of the sound in progress
        self.closed: list[tuple[int, int]] = []  # sample spans of sounds waiting for their margin of audio

    def push(self, samples: np.ndarray) -> list[Cut]:
        """Add mono samples; the sounds now finished."""
        self.audio = np.concatenate([self.audio, samples.astype(np.float32, copy=False)])
        self._measure(final=False)
        self._decide(final=False)
        return self._cut(final=False)

    def finish(self) -> list[Cut]:
        """The sounds left once the recording has ended (the floor then has no look-ahead left)."""
        self._measure(final=True)
        self._decide(final=True)
        if self.open is not None:
            self.closed += self._close(*self.open)
            self.open = None
        return self._cut(final=True)

    @property
    def received(self) -> int:
        return self.audio_start + len(self.audio)

    @property
    def measured(self) -> int:
        return self.energy_start + len(self.energy)

    def _measure(self, final: bool) -> None:
        """The levels of the frames whose window the audio now covers (at the end: every whole frame)."""
        first = self.measured
        stop = self.received // self.frame if final else (self.received - self.level.reach) // self.frame + 1
        if stop <= first:
            return
        begin = first * self.frame - self.level.lead
        samples = self.audio[max(begin - self.audio_start, 0):(stop - 1) * self.frame + self.level.reach
                             - self.audio_start]
        if begin < self.audio_start:  # the recording's first frame: its window starts before it
            samples = np.concatenate([np.zeros(self.audio_start - begin, dtype=np.float32), samples])
        self.energy = np.concatenate([self.energy, self.level(samples, stop - first)])

    def _decide(self, final: bool) -> None:
        """Judge every frame whose floor and smoothing the levels now cover."""
        half = SMOOTH_FRAMES // 2
        while self.decided < self.measured:
            start = self.decided - self.decided % STEP_FRAMES
            if not final and start + self.ahead + half > self.measured:
                return
            stop = min(start + STEP_FRAMES, self.measured if final else self.measured - half)
            if stop <= self.decided:
                return
            if self.step[0] != start:
                self.step = (start, *self._threshold(start))
            # the frames to judge, then the floor's look-ahead after them (up to start + ahead, as the
            # floor's, whatever the blocks), against this step's floor
            ahead = min(start + self.ahead, self.measured) if final else start + self.ahead
            levels = self._smoothed(self.decided, max(ahead, stop))
            sound = levels[:, 0] > self.step[1]
            near = (levels[:, 0] > self.step[2][0]) & (levels[:, 1:] > self.step[2][1:]).any(axis=1) \
                if self.sub_bands else np.zeros(len(levels), dtype=bool)
            reaches = sound.copy()  # whether an unbroken run of `near` frames joins it to a sound frame ahead
            for index in range(ahead - self.decided - 2, -1, -1):
                reaches[index] |= near[index] and reaches[index + 1]
            for frame, index in zip(range(self.decided, stop), range(len(levels))):
                self.sounding = bool(reaches[index] or (near[index] and self.sounding))
                self._judge(frame, self.sounding)
            self.decided = stop

    def _threshold(self, start: int) -> tuple[float, np.ndarray]:
        """dB a frame must exceed from `start` on: above the noise floor, within range of the loudest;
        and dB each sub-band must exceed (the first: the range alone)."""
        low = max(start - self.reach, self.energy_start)
        around = self._smoothed(low, max(min(start + self.ahead, self.measured), low + 1))
        within = float(around[:, 0].max()) - RANGE_DB
        bands = band_floors(around[:, 1:]) + self.threshold_db if self.sub_bands else around[0, 1:]
        return max(noise_floor(around[:, 0]) + self.threshold_db, within), np.concatenate([[within], bands])

    def _smoothed(self, first: int, stop: int) -> np.ndarray:
        """dB of frames first..stop-1 (band, sub-bands), each the mean power of SMOOTH_FRAMES frames around it."""
        half = SMOOTH_FRAMES // 2
        low = max(first - half, self.energy_start)
        high = min(stop + half, self.measured)
        power = 10 ** (self.energy[low - self.energy_start:high - self.energy_start] / 10)
        frames = np.arange(first, stop) - low
        sums, counts = np.zeros((len(frames), power.shape[1])), np.zeros((len(frames), 1))
        for shift in range(-half, SMOOTH_FRAMES - half):  # sums, not differences of running sums: -200 dB
            inside = (frames + shift >= 0) & (frames + shift < len(power))  # beside 0 dB stays exact
            sums[inside] += power[frames[inside] + shift]
            counts[inside] += 1
        return 10 * np.log10(np.maximum(sums / counts, SILENCE_POWER))  # never log10(0)

    def _judge(self, frame: int, sounding: bool) -> None:
        """Advance the sound in progress by one frame, closing it after a long enough pause."""
        if self.open is not None:
            first, last = self.open
            if frame - last > self.gap or frame - first >= self.longest:
                self.closed += self._close(first, last)
                self.open = None
        if sounding:
            self.open = (self.open[0], frame) if self.open is not None else (frame, frame)

    def _close(self, first: int, last: int) -> list[tuple[int, int]]:
        if last + 1 - first < self.shortest:
            return []
        return [(first * self.frame, (last + 1) * self.frame)]

    def _cut(self, final: bool) -> list[Cut]:
        """The closed sounds whose margin after them has arrived (at the end: all), cut out."""
        cuts = []
        while self.closed and (final or self.closed[0][1] + self.margin <= self.received):
            start, end = self.closed.pop(0)
            begin = max(start - self.margin, self.audio_start) - self.audio_start
            cuts.append(((start, end), self.audio[begin:end + self.margin - self.audio_start]))
        self._forget()
        return cuts

    def _forget(self) -> None:
        """Drop the levels and audio that no decision or cut will look at again."""
        keep_frame = self.decided - self.decided % STEP_FRAMES - self.reach - SMOOTH_FRAMES
        if keep_frame > self.energy_start:
            self.energy = self.energy[keep_frame - self.energy_start:]
            self.energy_start = keep_frame
        needed = [self.measured * self.frame - self.level.lead, self.decided * self.frame - self.margin]
        needed += [self.open[0] * self.frame - self.margin] if self.open else []
        needed += [self.closed[0][0] - self.margin] if self.closed else []
        keep_sample = min(needed)
        if keep_sample > self.audio_start:
            self.audio = self.audio[keep_sample - self.audio_start:]
            self.audio_start = keep_sample


def find_events(path: str, options: AudioOptions, encode: Callable[[torch.Tensor], torch.Tensor],
                batch_size: int = 64, latency: float = DEFAULT_LATENCY) -> Iterator[tuple[Spans, torch.Tensor]]:
    """([(start_s, end_s), ...], encoded batch) for the sounds of a recording file, in order, a
    batch as soon as a block of the file has finished some (or `batch_size` of them)."""
    _, rate = audio_length(path)
    blocks = (block.mean(axis=1) for block in iter_file_blocks(path, max(16384, round(rate))))
    return events_in(blocks, rate, path, options, encode, batch_size, latency)


def events_in(blocks: Iterable[np.ndarray], rate: int, name: str, options: AudioOptions,
              encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 64,
              latency: float = DEFAULT_LATENCY) -> Iterator[tuple[Spans, torch.Tensor]]:
    """The sounds of a recording that comes as blocks of mono samples at `rate`, encoded, a batch
    (of up to `batch_size`) as soon as a block has finished some; `name` names it in errors."""
    detector = EventDetector(rate, options, latency)
    length = target_length(options)
    pending: list[tuple[tuple[int, int], torch.Tensor]] = []

    def cut(cuts: list[Cut]) -> None:
        for span, samples in cuts:
            waveform = resample(torch.from_numpy(np.ascontiguousarray(samples)), rate, options.sample_rate)
            pending.append((span, fit_length(waveform, length, options.remove_dc)))

    def batches() -> Iterator[tuple[Spans, torch.Tensor]]:
        while pending:
            chunk, pending[:] = pending[:batch_size], pending[batch_size:]
            yield [(start / rate, end / rate) for (start, end), _ in chunk], encode(torch.stack([w for _, w in chunk]))

    read = 0
    for block in blocks:
        read += len(block)
        cut(detector.push(block))
        yield from batches()
    if read == 0:
        raise CnncliError(f"{name}: contains no audio (0 samples)")
    cut(detector.finish())
    yield from batches()
