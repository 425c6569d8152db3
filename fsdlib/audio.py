"""Reading audio as mono int16 at 44.1 kHz, the project's canonical waveform: validated WAV files for the pipeline,
any format libsndfile decodes for the importer."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fsdlib.errors import FsdError

SAMPLE_RATE = 44_100
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # what the importer and the tagger look for in folders
log = logging.getLogger(__name__)


def _check_riff(path: Path) -> None:
    """Catch what libsndfile forgives: a WAV whose data chunk claims more bytes than the file holds."""
    size = path.stat().st_size
    if size == 0:
        raise FsdError("empty file (0 bytes)", path)
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
            raise FsdError("not a WAV file (no RIFF/WAVE header)", path)
        if head[:4] != b"RIFF":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if pos + 8 + chunk_size > size:
                    have = size - pos - 8
                    raise FsdError(f"truncated WAV: data chunk declares {chunk_size} bytes, file holds {have}", path)
                return
            pos += 8 + chunk_size + (chunk_size & 1)
        raise FsdError("WAV has no data chunk", path)


def pcm16_data(path: str | Path) -> tuple[int, int] | None:
    """(byte offset, sample count) of the samples of a 16-bit mono 44.1 kHz PCM WAV: exactly what `load_wav` returns,
    stored where a memory map can read them in place; None for every other file (the pipeline converts those)."""
    with Path(path).open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = Path(path).stat().st_size
        fmt, pos = None, 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"fmt " and chunk_size >= 16:
                fmt = struct.unpack("<HHIIHH", f.read(16))  # tag, channels, rate, byte rate, block align, bits
            elif chunk_id == b"data":
                canonical = fmt is not None and fmt[:3] == (1, 1, SAMPLE_RATE) and fmt[4:] == (2, 16)
                fits = pos + 8 + chunk_size <= size and (pos + 8) % 2 == 0
                return (pos + 8, chunk_size // 2) if canonical and fits and chunk_size >= 2 else None
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


def load_wav(path: str | Path) -> np.ndarray:
    """Read a WAV as mono int16 at 44.1 kHz; downmix and resample other formats with a logged warning.

    Raises FsdError naming the file for a missing, empty, truncated or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise FsdError("audio file not found", path)
    _check_riff(path)
    return _decode(path, "WAV", logging.WARNING)


def read_audio(path: str | Path) -> np.ndarray:
    """Read any file libsndfile decodes (WAV, FLAC, OGG/Vorbis, MP3, ...) as mono int16 at 44.1 kHz.

    The importer's reader (fsdlib/importer.py), where conversion is the point, so it is logged at debug level only;
    the pipeline itself reads WAV only (`load_wav`).
    """
    path = Path(path)
    return _decode(path, _checked_kind(path), logging.DEBUG)


def _checked_kind(path: Path) -> str:
    """The file's kind for messages ("FLAC", "WAV", ...), after the checks libsndfile does not make: the file
    exists, is not empty, and a WAV's data chunk fits in it."""
    if not path.is_file():
        raise FsdError("audio file not found", path)
    if path.stat().st_size == 0:
        raise FsdError("empty file (0 bytes)", path)
    if path.suffix.lower() == ".wav":
        _check_riff(path)
    return path.suffix.lstrip(".").upper() or "audio"


def read_any(path: str | Path) -> np.ndarray:
    """`load_wav` for a .wav file (its checks and warnings), `read_audio` for any other format."""
    return load_wav(path) if Path(path).suffix.lower() == ".wav" else read_audio(path)


def _decode(path: Path, kind: str, level: int) -> np.ndarray:
    """Decode with libsndfile, then downmix, resample and convert to int16 where needed (logged at `level`)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.frames == 0:
            raise FsdError(f"empty {kind} (0 samples)", path)
        if info.channels == 1 and info.samplerate == SAMPLE_RATE and info.subtype == "PCM_16":
            data = sf.read(str(path), dtype="int16", always_2d=False)[0]
            return np.ascontiguousarray(data, dtype=np.int16)
        data, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except FsdError:
        raise
    except Exception as exc:  # libsndfile reports many kinds of damage; all mean "unreadable"
        raise FsdError(f"unreadable {kind} ({exc})", path) from None
    return _to_int16(data, sr, info.subtype, path, kind, level)


def _to_int16(data: np.ndarray, sr: int, subtype: str, path: Path, kind: str, level: int) -> np.ndarray:
    """Float samples (frames, channels) at `sr` to mono int16 at 44.1 kHz; the conversions logged at `level`."""
    conversions = []
    if data.shape[1] > 1:
        conversions.append(f"downmixed {data.shape[1]} channels")
    mono = data.mean(axis=1)
    if sr != SAMPLE_RATE:
        import librosa

        conversions.append(f"resampled {sr} Hz -> {SAMPLE_RATE} Hz")
        mono = librosa.resample(mono, orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    if subtype != "PCM_16":
        conversions.append(f"converted {subtype} to 16-bit PCM")
    if conversions:
        log.log(level, "%s: %s", path, ", ".join(conversions))
    if mono.size == 0:
        raise FsdError(f"empty {kind} (0 samples after conversion)", path)
    if not np.all(np.isfinite(mono)):
        raise FsdError(f"{kind} holds non-finite samples (NaN or inf)", path)
    return float_to_int16(mono)


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) as int16 (x 32768, rounded, clipped): the inverse of `to_float`."""
    return np.clip(np.round(np.asarray(samples) * 32768.0), -32768, 32767).astype(np.int16)


def window_starts(duration: float, segment: float, hop: float) -> list[float]:
    """Start times (s) of `segment`-long windows every `hop` seconds that cover [0, duration]: the last window ends
    at the end of the recording (a recording shorter than one window is one window)."""
    if segment <= 0 or hop <= 0:
        raise FsdError(f"segment and hop must be positive, got {segment} and {hop}")
    if duration <= segment:
        return [0.0]
    starts = list(np.arange(0.0, duration - segment, hop))
    return [float(s) for s in starts] + [duration - segment]


def read_windows(path: str | Path, segment: float, hop: float) -> Iterator[tuple[float, float, np.ndarray]]:
    """(start s, end s, mono int16 at 44.1 kHz) of each window of a recording of any length and format, read one
    window at a time, so memory stays bounded by a window whatever the file's length."""
    import soundfile as sf

    path = Path(path)
    kind = _checked_kind(path)
    try:
        f = sf.SoundFile(str(path))
    except Exception as exc:  # libsndfile's many kinds of damage
        raise FsdError(f"unreadable {kind} ({exc})", path) from None
    with f:
        if f.frames == 0:
            raise FsdError(f"empty {kind} (0 samples)", path)
        sr, duration = f.samplerate, f.frames / f.samplerate
        for start in window_starts(duration, segment, hop):
            first, last = round(start * sr), min(round((start + segment) * sr), f.frames)
            try:
                f.seek(first)
                data = f.read(last - first, dtype="float64", always_2d=True)
            except Exception as exc:
                raise FsdError(f"unreadable {kind} at {start:.2f} s ({exc})", path) from None
            yield start, last / sr, _to_int16(data, sr, f.subtype, path, kind, logging.DEBUG)


def to_float(wave: np.ndarray) -> np.ndarray:
    """int16 samples to float32 in [-1, 1): the EnvNet input scale (docs/method.md §2)."""
    return wave.astype(np.float32) / np.float32(32768.0)
