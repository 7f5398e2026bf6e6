"""Recordings in, mono float waveforms at one sample rate out.

soundfile (libsndfile) reads wav, flac, ogg and mp3 without FFmpeg, which torchaudio.load would
need; librosa is the fallback for mp3 files libsndfile rejects. Resampling and mix-down happen on
tensors with torchaudio. Every failure is a CnncliError naming the file, so batch work can
report it and carry on; that includes headers that lie (an implausible sample rate, more frames
than cnncli.limits allows, read block by block so a lie costs no memory) and samples that are
NaN or infinite.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as audio_functional

from cnncli.errors import CnncliError
from cnncli.files.reading import check_regular, read_limited
from cnncli.limits import AUDIO_RATES, MAX_AUDIO_SECONDS, MAX_AUDIO_VALUES

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

# libsndfile notes a WAV whose data chunk is shorter than its header says as "data : N (should be M)".
_SHORT_CHUNK = re.compile(r"^data\s*:.*should be", re.MULTILINE)
MAX_FILE_BYTES = 8 * MAX_AUDIO_VALUES  # float64 samples at the limit
BLOCK_VALUES = 2 ** 18  # values read per block


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes (hashed for the feature cache, then decoded without a second read)."""
    content = read_limited(path, MAX_FILE_BYTES, "audio file", "; predict a long recording with --window")
    if not content:
        raise CnncliError(f"{path}: the file is empty")
    return content


def decode(path: str | Path, content: bytes, sample_rate: int) -> torch.Tensor:
    """File bytes -> float32 mono waveform at `sample_rate` (1-D tensor)."""
    samples, native_rate = _decode_any(path, content)
    return to_mono_rate(samples, native_rate, sample_rate)


def recording_facts(path: str | Path) -> dict:
    """Duration in seconds, sample rate and channels of a recording as stored, after a full
    decode (so a truncated or corrupt file is found)."""
    samples, native_rate = _decode_any(path, read_bytes(path))
    channels = {1: "mono", 2: "stereo"}.get(samples.shape[1], f"{samples.shape[1]} channels")
    return {"seconds": round(samples.shape[0] / native_rate, 4), "rate": f"{native_rate} Hz", "channels": channels}


def _decode_any(path: str | Path, content: bytes) -> tuple[np.ndarray, int]:
    """(frames, channels) samples and their rate, by libsndfile or, for mp3, librosa."""
    try:
        samples, native_rate = _decode_soundfile(path, content)
    except CnncliError:
        if Path(path).suffix.lower() != ".mp3":
            raise
        samples, native_rate = _decode_librosa(path)
    if samples.shape[0] == 0:
        raise CnncliError(f"{path}: contains no audio (0 samples)")
    check_rate(path, native_rate)
    if not np.isfinite(samples).all():
        raise CnncliError(f"{path}: holds samples that are not finite numbers (NaN or infinity)")
    return samples, native_rate


def check_rate(path: str | Path, native_rate: int) -> None:
    """A sample rate outside AUDIO_RATES is a header that lies (resampling from it could take
    gigabytes)."""
    low, high = AUDIO_RATES
    if not low <= native_rate <= high:
        raise CnncliError(f"{path}: a sample rate of {native_rate:,} Hz is not plausible (expected {low:,} to "
                          f"{high:,} Hz)")


def to_mono_rate(samples: np.ndarray, native_rate: int, sample_rate: int) -> torch.Tensor:
    """(frames, channels) array at `native_rate` -> mono 1-D float32 tensor at `sample_rate`."""
    waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if waveform.dim() == 2:  # mix-down: the average of the channels keeps the level (one channel: itself)
        waveform = waveform[:, 0] if waveform.shape[1] == 1 else waveform.mean(dim=1)
    return resample(waveform, native_rate, sample_rate)


def resample(waveforms: torch.Tensor, native_rate: int, sample_rate: int) -> torch.Tensor:
    """(..., frames) at `native_rate` -> (..., frames') at `sample_rate` (windowed sinc, torchaudio)."""
    if native_rate == sample_rate:
        return waveforms
    return audio_functional.resample(waveforms, native_rate, sample_rate)


def audio_length(path: str | Path) -> tuple[int, int]:
    """(frames, native sample rate) from the header, without decoding (of a regular file: libsndfile
    would wait on a FIFO and read a device forever)."""
    check_regular(path, "audio file")
    try:
        info = soundfile.info(str(path))
    except FileNotFoundError:
        raise CnncliError(f"{path}: no such file") from None
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise CnncliError(f"{path}: not a readable audio file ({_reason(error)})") from None
    check_rate(path, info.samplerate)
    return info.frames, info.samplerate


def iter_file_blocks(path: str | Path, block_frames: int) -> Iterator[np.ndarray]:
    """The file in consecutive (frames, channels) blocks, for streaming over long recordings."""
    try:
        yield from soundfile.blocks(str(path), blocksize=block_frames, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise CnncliError(f"{path}: not a readable audio file ({_reason(error)})") from None


def _decode_soundfile(path: str | Path, content: bytes) -> tuple[np.ndarray, int]:
    try:
        with soundfile.SoundFile(io.BytesIO(content)) as handle:
            declared = handle.frames
            native_rate = handle.samplerate
            check_rate(path, native_rate)
            samples = _read_blocks(handle, path)
            truncated = len(samples) < declared or _SHORT_CHUNK.search(handle.extra_info or "")
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, MemoryError) as error:
        raise CnncliError(f"{path}: not a readable audio file ({_reason(error)})") from None
    if truncated:
        raise CnncliError(f"{path}: the audio file is truncated (shorter than its header says)")
    return samples, native_rate


def _read_blocks(handle: soundfile.SoundFile, path: str | Path) -> np.ndarray:
    """All frames as (frames, channels) float32, read in blocks so that a header claiming more
    frames than the file holds allocates nothing; past the limits, an error."""
    channels = max(handle.channels, 1)
    most = min(MAX_AUDIO_VALUES // channels, MAX_AUDIO_SECONDS * handle.samplerate)
    blocks, total = [], 0
    while True:
        part = handle.read(frames=max(1, BLOCK_VALUES // channels), dtype="float32", always_2d=True)
        if not len(part):
            break
        total += len(part)
        if total > most:
            raise CnncliError(f"{path}: longer than {MAX_AUDIO_SECONDS // 60} minutes or {MAX_AUDIO_VALUES:,} "
                              "values; predict a long recording with --window")
        blocks.append(part)
    return np.concatenate(blocks) if blocks else np.zeros((0, channels), dtype=np.float32)


def _decode_librosa(path: str | Path) -> tuple[np.ndarray, int]:
    """Fallback for mp3 variants libsndfile's decoder rejects (librosa goes through audioread)."""
    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns when it falls back to audioread
            samples, native_rate = librosa.load(str(path), sr=None, mono=False)
    except Exception as error:  # noqa: BLE001 - audioread backends raise many unrelated types
        raise CnncliError(f"{path}: not a readable audio file ({_reason(error)})") from None
    samples = np.atleast_2d(samples).T  # librosa gives (channels, frames)
    return samples, int(native_rate)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text
