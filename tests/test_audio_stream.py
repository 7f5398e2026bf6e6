"""predict --segment --stream: one recording read as it arrives (a WAV stream with its header, or
raw PCM described by --raw), a row per sound as soon as it is decided, the same rows as --segment
on the file at the same latency; a stream cut in the middle of a sample ends cleanly, ^C prints
what was heard and exits 130, and a sound's row comes within the latency of its end."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import REPO
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.errors import CnncliError
from cnncli.modalities.audio.options import AudioOptions
from cnncli.modalities.audio.stream import parse_raw, stream_events, wav_format

BUNDLE = REPO / "tests" / "fixtures" / "bundles-v1" / "audio"
RATE = 16000
TONES = [(0.5, 0.4, 500.0), (2.0, 0.3, 900.0), (3.4, 0.5, 700.0)]  # (onset s, length s, Hz)


def samples(seconds: float = 5.0, tones=TONES, seed: int = 0) -> np.ndarray:
    """Tones at known onsets in white noise at -50 dBFS, mono float."""
    signal_ = np.random.default_rng(seed).standard_normal(round(seconds * RATE)) * 10 ** (-50 / 20)
    for onset, length, frequency in tones:
        piece = signal_[round(onset * RATE):round((onset + length) * RATE)]  # a view: cut short at the end
        piece += 0.1 * np.sin(2 * np.pi * frequency * np.arange(len(piece)) / RATE)
    return signal_


def pcm16(signal_: np.ndarray) -> bytes:
    return (np.clip(signal_, -1, 1) * 32767).astype("<i2").tobytes()


def wav_bytes(data: bytes, data_size: int | None = None, riff_size: int | None = None, before: bytes = b"",
              after: bytes = b"", channels: int = 1, bits: int = 16, code: int = 1) -> bytes:
    """A WAV file's bytes: RIFF header, `before` chunks, format, data (its size as given), `after` chunks."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", code, channels, RATE, RATE * block, block, bits)
    body = b"WAVE" + before + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data + after
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def run(*args: str, stdin: bytes | None = None):
    return CliRunner().invoke(app, ["predict", str(BUNDLE), *args], input=stdin)


def rows(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def same_rows(streamed: list[dict], found: list[dict]) -> None:
    assert [(row["start"], row["end"], row["label"]) for row in streamed] == \
        [(row["start"], row["end"], row["label"]) for row in found]
    assert [row["score"] for row in streamed] == pytest.approx([row["score"] for row in found], abs=1e-4)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "tones.wav"
    soundfile.write(path, samples(), RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def segmented(recording: Path) -> list[dict]:
    found = rows(run(str(recording), "--segment", "--latency", "0.5", "--format", "jsonl"))
    assert [round(row["start"], 1) for row in found] == [onset for onset, _, _ in TONES]
    return found


def test_a_wav_stream_on_stdin_or_a_file_gives_the_rows_of_segment_on_the_file(recording: Path, segmented):
    piped = rows(run("--segment", "--stream", "-", "--latency", "0.5", "--format", "jsonl",
                     stdin=recording.read_bytes()))
    same_rows(piped, segmented)
    assert {row["input"] for row in piped} == {"-"}
    same_rows(rows(run("--segment", "--stream", str(recording), "--latency", "0.5", "--format", "jsonl")), segmented)


def test_raw_pcm_gives_the_rows_of_the_same_samples_in_a_wav(recording: Path, segmented):
    data = soundfile.read(recording, dtype="int16")[0].astype("<i2").tobytes()
    raw = run("--segment", "--stream", "-", "--raw", "s16le:16000:1", "--latency", "0.5", "--format", "jsonl",
              stdin=data)
    same_rows(rows(raw), segmented)


@pytest.mark.parametrize("encoding, dtype", [("s16le", "<i2"), ("s16be", ">i2"), ("s32le", "<i4"), ("f32le", "<f4"),
                                             ("f64be", ">f8"), ("u8", "u1"), ("s8", "i1")])
def test_each_raw_encoding_reads_its_samples(encoding: str, dtype: str):
    values = np.array([[0.0, 0.5], [-0.5, 0.25], [-1.0, 0.75]])
    kind = np.dtype(dtype).kind
    scale = 1 if kind == "f" else 2 ** (8 * np.dtype(dtype).itemsize - 1)
    stored = values * scale + (128 if kind == "u" else 0)
    layout = parse_raw(f"{encoding}:8000:2")
    assert np.allclose(layout.samples(stored.astype(dtype).tobytes()), values)


def test_24_bit_samples_in_either_byte_order():
    values = [0, 2 ** 22, -2 ** 23, 2 ** 23 - 1]
    little = b"".join(value.to_bytes(3, "little", signed=True) for value in values)
    expected = np.array(values, dtype=np.float64)[:, None] / 2 ** 23
    assert np.allclose(parse_raw("s24le:16000:1").samples(little), expected)
    assert np.allclose(parse_raw("s24be:16000:1").samples(b"".join(
        value.to_bytes(3, "big", signed=True) for value in values)), expected)


def test_a_stream_cut_in_the_middle_of_a_sample_ends_cleanly(recording: Path, segmented):
    data = soundfile.read(recording, dtype="int16")[0].astype("<i2").tobytes()
    cut = run("--segment", "--stream", "-", "--raw", "s16le:16000:1", "--latency", "0.5", "--format", "jsonl",
              stdin=data + data[:1])
    same_rows(rows(cut), segmented)
    # a WAV stream whose header promises more than comes, ending after one byte of a sample
    short = wav_bytes(data + data[:1], data_size=len(data) + 1000)
    same_rows(rows(run("--segment", "--stream", "-", "--latency", "0.5", "--format", "jsonl", stdin=short)),
              segmented)


def test_a_placeholder_size_reads_to_the_end_and_a_real_one_stops_at_the_end_of_the_data(recording: Path, segmented):
    data = soundfile.read(recording, dtype="int16")[0].astype("<i2").tobytes()
    streaming = wav_bytes(data, data_size=0xFFFFFFFF, riff_size=0xFFFFFFFF)
    same_rows(rows(run("--segment", "--stream", "-", "--latency", "0.5", "--format", "jsonl", stdin=streaming)),
              segmented)
    loud = pcm16(np.sin(np.arange(RATE) / 3))  # a second of loud tone: a sound, if it were read as audio
    chunk = b"LIST" + struct.pack("<I", 4 + len(loud)) + b"INFO" + loud
    finished = wav_bytes(data, before=b"junk" + struct.pack("<I", 3) + b"abc\0", after=chunk)
    same_rows(rows(run("--segment", "--stream", "-", "--latency", "0.5", "--format", "jsonl", stdin=finished)),
              segmented)


def test_wav_formats_that_cannot_be_read_name_themselves():
    with pytest.raises(CnncliError, match="format 2, 4 bits"):
        wav_format(struct.pack("<HHIIHH", 2, 1, RATE, RATE, 1, 4), "<stdin>")
    with pytest.raises(CnncliError, match="not plausible"):
        wav_format(struct.pack("<HHIIHH", 1, 1, 10, 20, 2, 16), "<stdin>")


@pytest.mark.parametrize("args, stdin, message", [
    (["--segment", "--stream", "-"], b"not audio at all", "--raw"),
    (["--segment", "--stream", "-", "--raw", "s16:16000"], b"", "--raw s16:16000: expected ENCODING:RATE:CHANNELS"),
    (["--segment", "--stream", "-", "--raw", "s16le:16000:0"], b"", "0 channels"),
    (["--stream", "-"], b"", "give it with --segment"),
    (["x.wav", "--segment", "--raw", "s16le:16000:1"], b"", "--raw: describes the samples of --stream"),
    (["x.wav", "--segment", "--stream", "-"], b"", "not inputs and --stream"),
    (["x.wav", "--latency", "0.5"], b"", "--latency"),
    (["--segment", "--stream", "-", "--latency", "0.05"], wav_bytes(b"\0\0" * 100), "--latency 0.05: from 0.1 seconds"),
    (["--segment", "--stream", "-", "--format", "table"], b"", "--format table"),
    (["--segment", "--stream", "-", "--adapt"], b"", "--adapt"),
])
def test_stream_mistakes_are_one_line_each(args: list[str], stdin: bytes, message: str):
    result = run(*args, stdin=stdin)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output


def test_an_empty_stream_says_so():
    result = run("--segment", "--stream", "-", "--raw", "s16le:16000:1", stdin=b"")
    assert result.exit_code == 1 and "contains no audio" in result.output


def test_memory_stays_flat_over_a_long_stream():
    """Ten minutes of raw PCM through the reader and the event finder: what is kept is the
    look-ahead, the floor's past and a sound, never the stream (tracemalloc sees numpy's arrays)."""
    import tracemalloc

    class Source:  # ten minutes of 8 kHz noise with a tone every 3 s, made as it is read
        def __init__(self):
            self.second, self.generator = 0, np.random.default_rng(0)

        def read1(self, size: int) -> bytes:
            if self.second >= 600:
                return b""
            block = self.generator.standard_normal(8000) * 1e-3
            if self.second % 3 == 0:
                block[:4000] += 0.1 * np.sin(2 * np.pi * 500 * np.arange(4000) / 8000)
            self.second += 1
            return pcm16(block)

    tracemalloc.start()
    try:
        found = sum(len(spans) for spans, _ in stream_events(Source(), "test", "s16le:8000:1",
                                                             AudioOptions(sample_rate=8000), lambda w: w[:, :1]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == 200 and peak < 8e6  # the stream is 9.6 MB of samples, 38 MB as floats


def test_interrupt_prints_the_sounds_heard_so_far_and_exits_130(tmp_path: Path):
    process = subprocess.Popen([sys.executable, "-m", "cnncli", "predict", str(BUNDLE), "--segment", "--stream", "-",
                                "--raw", "s16le:16000:1", "--format", "csv"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.decode() for line in process.stdout))
    reader.start()
    # 2.8 s: the first tone is decided (the default latency, 1 s, after its end); the second,
    # ending at 2.3 s, would be decided at 3.3 s
    process.stdin.write(pcm16(samples(2.8)))
    process.stdin.flush()
    deadline = time.monotonic() + 120
    while len(lines) < 2 and time.monotonic() < deadline:  # the header and the first sound's row
        time.sleep(0.1)
    time.sleep(0.5)
    assert len(lines) == 2, lines
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    reader.join(timeout=10)
    process.stdin.close()
    assert process.returncode == 130, process.stderr.read().decode()
    assert [round(float(line.split(",")[1]), 1) for line in lines[1:]] == [0.5, 2.0]


def test_each_row_comes_within_the_latency_of_its_sound_end(tmp_path: Path):
    """A paced writer plays four seconds into a named pipe at real time; each row is timed from the
    moment its sound's last sample was written."""
    from cnncli.bundle.io import load_bundle
    from cnncli.verbs.predict import predict_batches, prediction_inputs

    bundle = load_bundle(BUNDLE)
    pipe = tmp_path / "live"
    os.mkfifo(pipe)
    audio = tmp_path / "audio.raw"
    audio.write_bytes(pcm16(samples(4.5)))
    start = time.monotonic() + 1.0
    writer = subprocess.Popen([sys.executable, "-c", PACED_WRITER, str(audio), str(pipe), str(start), str(RATE * 2)])
    arrivals = []
    batches = predict_batches(bundle, prediction_inputs(bundle, stream=str(pipe)), segment=True, stream=True,
                              raw="s16le:16000:1", latency=0.3, device=torch.device("cpu"))
    for batch in batches:
        arrivals += [(row.start, time.monotonic()) for row in batch]
    writer.wait(timeout=30)
    assert [round(start_, 1) for start_, _ in arrivals] == [onset for onset, _, _ in TONES]
    delays = [arrived - (start + onset + length) for (_, arrived), (onset, length, _) in zip(arrivals, TONES)]
    # 0.3 s, and what a loaded machine adds (the default latency, 1 s, would give a second and more)
    assert sorted(delays)[1] <= 0.3 + 0.5 and max(delays) < 1.5, delays


PACED_WRITER = """
import sys, time
audio, pipe, start, per_second = open(sys.argv[1], "rb").read(), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
chunk = per_second // 50  # 20 ms at a time
with open(pipe, "wb", buffering=0) as out:
    for position in range(0, len(audio), chunk):
        time.sleep(max(0.0, start + position / per_second - time.monotonic()))
        out.write(audio[position:position + chunk])
"""


def test_the_wav_bytes_helper_writes_what_soundfile_reads():
    data = pcm16(samples(0.1))
    read, rate = soundfile.read(io.BytesIO(wav_bytes(data)), dtype="int16")
    assert rate == RATE and read.tobytes() == data
