"""Hostile files for the fuzz tests: real samples truncated or bit-flipped, headers that lie,
audio that is NaN or infinite, markup-like and undecodable text. Plain functions of explicit
parameters, so the hypothesis strategies (test_fuzz.py) and the address-space check
(test_address_space.py) draw from the same makers."""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SUFFIXES = (".png", ".jpg", ".wav", ".flac", ".mp3", ".txt", ".csv")
MARKUP_WORDS = ("[bold]", "[/bold]", "[/x]", "[/]", "[red]", "[link=file:///etc]", "[", "]", "\\[", "[@click]",
                "good", "film", "not", "bad", "=1+1", "+SUM(A1)", "-", "@x", "\t", "é", "日本", "\U0001f600",
                "\x00", "\x1b[31m", "\u202e", "NaN", "Infinity", "'", '"', ",", ";")
AUDIO_VALUES = (float("nan"), float("inf"), float("-inf"), 1e38, -1e38, 0.5, 0.0)


@lru_cache(maxsize=None)
def real_samples() -> dict[str, tuple[bytes, ...]]:
    """A few real files per suffix, from sample_data/ (and converted from it in memory)."""
    pngs = sorted((REPO / "sample_data" / "images").rglob("*.png"))[:3]
    wavs = sorted((REPO / "sample_data" / "audio").glob("*.wav"))[:3]
    samples = {".png": tuple(path.read_bytes() for path in pngs), ".wav": tuple(path.read_bytes() for path in wavs)}
    jpegs, flacs, mp3s = [], [], []
    for png, wav in zip(pngs, wavs):
        buffer = io.BytesIO()
        Image.open(io.BytesIO(png.read_bytes())).convert("RGB").save(buffer, "JPEG")
        jpegs.append(buffer.getvalue())
        audio, rate = soundfile.read(io.BytesIO(wav.read_bytes()), dtype="float32")
        for kind, store in (("FLAC", flacs), ("MP3", mp3s)):
            buffer = io.BytesIO()
            soundfile.write(buffer, audio, rate, format=kind)
            store.append(buffer.getvalue())
    samples.update({".jpg": tuple(jpegs), ".flac": tuple(flacs), ".mp3": tuple(mp3s)})
    lines = (REPO / "sample_data" / "text" / "sentences.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sentences = [line.split("\t", 1)[-1] for line in lines]
    samples[".txt"] = tuple("\n".join(sentences[i:i + 5]).encode() for i in range(0, 15, 5))
    samples[".csv"] = tuple(("label,text\n" + "\n".join(line.replace("\t", ",") for line in lines[i:i + 5])).encode()
                            for i in range(0, 15, 5))
    return samples


def truncated(content: bytes, fraction: float) -> bytes:
    return content[:int(len(content) * fraction)]


def flipped(content: bytes, changes: list[tuple[int, int]]) -> bytes:
    """`content` with byte (position % length) set to value, for each change."""
    data = bytearray(content)
    for position, value in changes:
        if data:
            data[position % len(data)] = value
    return bytes(data)


def png_header(width: int, height: int, bit_depth: int = 8, color: int = 0, valid_crc: bool = True) -> bytes:
    """A PNG of one IHDR and no pixels, claiming width x height."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) if valid_crc else 0
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def jpeg_with_size(content: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) claims width x height."""
    data = bytearray(content)
    start = data.find(b"\xff\xc0")
    if start >= 0 and start + 9 <= len(data):
        data[start + 5:start + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def wav_header(rate: int, channels: int, bits: int, format_tag: int, declared: int, payload: bytes) -> bytes:
    """A RIFF WAV whose fmt and data chunks say what the arguments say, whatever follows."""
    block = max(channels * bits // 8, 0) & 0xFFFF
    fmt = struct.pack("<HHIIHH", format_tag & 0xFFFF, channels & 0xFFFF, rate & 0xFFFFFFFF,
                      (rate * block) & 0xFFFFFFFF, block, bits & 0xFFFF)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", declared) + payload
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


def flac_with_streaminfo(content: bytes, rate: int, channels: int, bits: int, total: int) -> bytes:
    """A real FLAC whose STREAMINFO claims another rate, channel count, depth and length."""
    data = bytearray(content)
    if len(data) >= 26 and data[:4] == b"fLaC":
        packed = ((rate & 0xFFFFF) << 44) | (((channels - 1) & 0x7) << 41) | (((bits - 1) & 0x1F) << 36) | \
            (total & 0xFFFFFFFFF)
        data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def float_wav(values: list[float], rate: int = 8000) -> bytes:
    """A float32 WAV holding `values` repeated to a quarter second: NaN and infinities included."""
    samples = np.resize(np.array(values or [0.0], dtype=np.float32), max(rate // 4, 1))
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def markup_text(words: list[str]) -> str:
    return " ".join(words)


def named_corpus(folder: Path) -> list[Path]:
    """The hostile files issue 13 names, written into `folder`."""
    samples = real_samples()
    made = {
        "bomb.png": png_header(100_000, 100_000),
        "bomb-rgba16.png": png_header(60_000, 60_000, 16, 6),
        "wide.jpg": jpeg_with_size(samples[".jpg"][0], 65_535, 65_535),
        "nan.wav": float_wav([float("nan")]),
        "inf.wav": float_wav([float("inf"), float("-inf")]),
        "huge.wav": float_wav([1e38]),
        "rate.wav": wav_header(4_000_000_000, 1, 16, 1, 2 ** 32 - 1, samples[".wav"][0][44:]),
        "channels.wav": wav_header(8000, 65_535, 32, 3, 2 ** 32 - 1, bytes(4000)),
        "long.flac": flac_with_streaminfo(samples[".flac"][0], 8000, 8, 32, 2 ** 36 - 1),
        "empty.wav": b"", "empty.png": b"", "empty.txt": b"",
        "latin.txt": "caf\xe9 [bold]cr\xe8me[/bold]\n".encode("latin-1"),
        "markup.txt": "good film [/quote] indeed\n[bold]x[/bold]\n".encode(),
    }
    for name, content in made.items():
        (folder / name).write_bytes(content)
    return [folder / name for name in made]


def random_corpus(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` hostile files of every suffix, drawn from a seeded generator."""
    import random

    generator = random.Random(seed)
    samples = real_samples()
    paths = []
    for index in range(count):
        suffix = SUFFIXES[index % len(SUFFIXES)]
        real = generator.choice(samples[suffix])
        maker = generator.choice(["bytes", "truncated", "flipped", "lie"])
        if maker == "bytes":
            content = generator.randbytes(generator.randrange(3000))
        elif maker == "truncated":
            content = truncated(real, generator.random())
        elif maker == "flipped":
            content = flipped(real, [(generator.randrange(10 ** 6), generator.randrange(256)) for _ in range(8)])
        elif suffix == ".png":
            content = png_header(generator.randrange(2 ** 31), generator.randrange(2 ** 31))
        elif suffix == ".jpg":
            content = jpeg_with_size(real, generator.randrange(65_536), generator.randrange(65_536))
        elif suffix == ".flac":
            content = flac_with_streaminfo(real, generator.randrange(2 ** 20), generator.randrange(1, 9),
                                           generator.randrange(4, 33), generator.randrange(2 ** 36))
        elif suffix in (".wav", ".mp3"):
            content = wav_header(generator.randrange(2 ** 32), generator.randrange(1, 2 ** 16),
                                 generator.choice([8, 16, 24, 32, 64]), generator.choice([1, 3, 0xFFFE]),
                                 generator.randrange(2 ** 32), real[44:])
        else:
            content = markup_text(generator.choices(MARKUP_WORDS, k=10)).encode("utf-8", "surrogatepass")
        path = folder / f"{index:04d}{suffix}"
        path.write_bytes(content)
        paths.append(path)
    return paths
