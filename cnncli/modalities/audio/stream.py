"""A recording that arrives as it is made: a WAV stream (its header first) or raw PCM, from
standard input or a file, read as it comes and cut into the sounds found in it (events.py).

`arecord -f S16_LE -r 16000 -c 1 | cnncli predict runs/fsdd --segment --stream - --raw s16le:16000:1`.
Bytes are taken as soon as the pipe has them (a short read, never a wait for a full block), so a
sound is decided `latency` seconds after it ends however slowly the audio comes. A WAV header's
data size is honoured when it is a real one; a streaming writer's placeholder (0, or more than
will ever come) reads to the end. The end of the input ends the recording, also in the middle of
a sample (the incomplete frame is dropped). On ^C the audio read so far is decided, its sounds
given, and the interrupt goes on.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch

from cnncli.errors import CnncliError
from cnncli.modalities.audio.decoding import check_rate
from cnncli.modalities.audio.events import DEFAULT_LATENCY, Spans, events_in
from cnncli.modalities.audio.options import AudioOptions

READ_SECONDS = 0.02  # at most this much audio per read: a live stream is taken as it comes
MAX_CHANNELS = 64
MAX_FORMAT_BYTES = 1024  # a WAV format chunk is 16 to 40 bytes; a longer one is not a WAV header
# --raw encodings: (kind, bytes per sample, byte order), named as ffmpeg and sox name them
ENCODINGS = {"u8": ("uint", 1, "<"), "s8": ("int", 1, "<"),
             **{f"{letter}{bits}{order}": (kind, bits // 8, "<" if order == "le" else ">")
                for letter, kind, sizes in (("s", "int", (16, 24, 32)), ("f", "float", (32, 64)))
                for bits in sizes for order in ("le", "be")}}
RAW_HELP = f"ENCODING:RATE:CHANNELS, e.g. s16le:16000:1 (encodings: {', '.join(ENCODINGS)})"
WAVE_PCM, WAVE_FLOAT, WAVE_EXTENSIBLE = 1, 3, 0xFFFE
UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # what streaming writers put in a WAV header's sizes


@dataclass(frozen=True)
class Layout:
    """How the bytes of a stream hold its samples."""

    rate: int
    channels: int
    width: int  # bytes per sample
    kind: str  # "int", "uint" (8-bit WAV, offset by 128) or "float"
    endian: str = "<"

    @property
    def frame_bytes(self) -> int:
        return self.width * self.channels

    def samples(self, data: bytes) -> np.ndarray:
        """Whole frames of `data` as (frames, channels) float32 in -1..1."""
        if self.width == 3:  # 24-bit: widened to 32 bits, the low byte zero
            raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)
            order = [2, 1, 0] if self.endian == ">" else [0, 1, 2]
            wide = np.zeros((len(raw), 4), dtype=np.uint8)
            wide[:, 1:] = raw[:, order]
            values = wide.view("<i4")[:, 0].astype(np.float32) / 2 ** 31
        else:
            code = {"int": "i", "uint": "u", "float": "f"}[self.kind]
            values = np.frombuffer(data, dtype=f"{self.endian}{code}{self.width}").astype(np.float32)
            if self.kind == "uint":
                values = (values - 128) / 128
            elif self.kind == "int":
                values = values / 2 ** (8 * self.width - 1)
        return values.reshape(-1, self.channels)


def parse_raw(text: str) -> Layout:
    """--raw ENCODING:RATE:CHANNELS as a Layout; anything else, an error naming the flag."""
    parts = text.split(":")
    if len(parts) != 3 or parts[0].lower() not in ENCODINGS or not parts[1].isdigit() or not parts[2].isdigit():
        raise CnncliError(f"--raw {text}: expected {RAW_HELP}")
    kind, width, endian = ENCODINGS[parts[0].lower()]
    return checked(Layout(int(parts[1]), int(parts[2]), width, kind, endian), "--raw")


def checked(layout: Layout, name: str) -> Layout:
    check_rate(name, layout.rate)
    if not 1 <= layout.channels <= MAX_CHANNELS:
        raise CnncliError(f"{name}: {layout.channels} channels (expected 1 to {MAX_CHANNELS})")
    return layout


class Reader:
    """Bytes of a binary stream as they come: a short read returns what the pipe has."""

    def __init__(self, source: BinaryIO):
        self.source = source
        self.read_some = getattr(source, "read1", None) or source.read

    def exactly(self, size: int) -> bytes:
        """`size` bytes, or fewer if the stream ends first."""
        parts, have = [], 0
        while have < size:
            part = self.read_some(size - have)
            if not part:
                break
            parts.append(part)
            have += len(part)
        return b"".join(parts)

    def skip(self, size: int) -> None:
        while size > 0:
            part = self.read_some(min(size, 65536))
            if not part:
                return
            size -= len(part)


def wav_header(reader: Reader, name: str) -> tuple[Layout, int | None]:
    """The layout of a WAV stream and the bytes of its data chunk (None: to the end), read up to
    the data chunk's first byte."""
    riff = reader.exactly(12)
    if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RF64") or riff[8:12] != b"WAVE":
        raise CnncliError(f"{name}: not a WAV stream (no RIFF/WAVE header); for raw samples give --raw {RAW_HELP}")
    layout = None
    while True:
        head = reader.exactly(8)
        if len(head) < 8:
            raise CnncliError(f"{name}: the WAV stream ends before its data")
        chunk, size = head[:4], struct.unpack("<I", head[4:])[0]
        if chunk == b"data":
            if layout is None:
                raise CnncliError(f"{name}: the WAV stream has no format chunk before its data")
            return layout, None if size in UNKNOWN_SIZES else size
        if chunk == b"fmt ":
            if size > MAX_FORMAT_BYTES:
                raise CnncliError(f"{name}: a WAV format chunk of {size:,} bytes is not a WAV header")
            layout = wav_format(reader.exactly(size + size % 2)[:size], name)
        else:  # another chunk (LIST, fact, ...): skipped a piece at a time
            reader.skip(size + size % 2)


def wav_format(body: bytes, name: str) -> Layout:
    """A WAV format chunk as a Layout: integer PCM (8 to 32 bits) or IEEE float (32, 64)."""
    if len(body) < 16:
        raise CnncliError(f"{name}: the WAV format chunk is too short")
    code, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if code == WAVE_EXTENSIBLE and len(body) >= 26:
        code = struct.unpack("<H", body[24:26])[0]
    width = bits // 8
    usable = (code == WAVE_PCM and bits in (8, 16, 24, 32)) or (code == WAVE_FLOAT and bits in (32, 64))
    if not usable:
        raise CnncliError(f"{name}: a WAV stream of format {code}, {bits} bits, which cannot be read (integer PCM "
                          "of 8 to 32 bits and 32/64-bit float can)")
    kind = "float" if code == WAVE_FLOAT else "uint" if bits == 8 else "int"
    return checked(Layout(rate, channels, width, kind), name)


def stream_blocks(source: BinaryIO, name: str, raw: str | None) -> tuple[int, Iterator[np.ndarray]]:
    """(sample rate, blocks of mono samples as they arrive) of a WAV stream, or raw PCM as `raw` says."""
    reader = Reader(source)
    layout, remaining = (parse_raw(raw), None) if raw else wav_header(reader, name)

    def blocks() -> Iterator[np.ndarray]:
        left = remaining
        carry = b""
        most = max(layout.frame_bytes, round(READ_SECONDS * layout.rate) * layout.frame_bytes)
        while left is None or left > 0:
            part = reader.read_some(most if left is None else min(most, left))
            if not part:
                return  # the end; an incomplete frame in `carry` is dropped
            left = None if left is None else left - len(part)
            data = carry + part
            whole = len(data) - len(data) % layout.frame_bytes
            carry = data[whole:]
            if whole:
                samples = layout.samples(data[:whole])
                if not np.isfinite(samples).all():
                    raise CnncliError(f"{name}: holds samples that are not finite numbers (NaN or infinity)")
                yield samples.mean(axis=1)

    return layout.rate, blocks()


def stream_events(source: BinaryIO, name: str, raw: str | None, options: AudioOptions,
                  encode: Callable[[torch.Tensor], torch.Tensor],
                  latency: float = DEFAULT_LATENCY) -> Iterator[tuple[Spans, torch.Tensor]]:
    """([(start_s, end_s)], encoded) for each sound of the stream, one at a time, as soon as it
    is decided. ^C while waiting for audio: the sounds of what was read, then KeyboardInterrupt."""
    rate, blocks = stream_blocks(source, name, raw)
    interrupted = False

    def until_interrupted() -> Iterator[np.ndarray]:
        nonlocal interrupted
        try:
            yield from blocks
        except KeyboardInterrupt:
            interrupted = True

    try:
        yield from events_in(until_interrupted(), rate, name, options, encode, 1, latency)
    except CnncliError:
        if not interrupted:  # ^C before the first sample: an interrupt, not an empty stream
            raise
    if interrupted:
        raise KeyboardInterrupt
