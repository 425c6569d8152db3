"""Waveforms read where they lie: the samples of a 16-bit mono 44.1 kHz PCM WAV, memory-mapped in the WAV itself.

A waveform store of layout `reference` (docs/method.md §2) records, per clip, the WAV's path, the byte offset and
count of its samples and the file's size, instead of a copy of the samples; other WAVs are converted into it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsdlib.audio import pcm16_data
from fsdlib.errors import FsdError


@dataclass(frozen=True)
class WaveRef:
    """Where a clip's int16 samples lie: `samples` of them from byte `offset` of `path`, a file of `file_bytes`."""

    path: Path
    offset: int
    samples: int
    file_bytes: int


def wave_ref(path: Path, n_samples: int) -> WaveRef | None:
    """The reference of a canonical WAV whose data chunk holds exactly the `n_samples` decoded; else None."""
    found = pcm16_data(path)
    if found is None or found[1] != n_samples:
        return None
    return WaveRef(Path(path), found[0], found[1], Path(path).stat().st_size)


def recorded_path(path: Path, store_dir: Path) -> str:
    """The path a store records: absolute as given, or relative to the store's folder (a relative dataset root
    then still resolves after the repository moves, and in DVC's experiment copies of it)."""
    return str(path) if Path(path).is_absolute() else os.path.relpath(path, store_dir)


def resolved(recorded: str, store_dir: Path) -> Path:
    """The WAV a recorded path names."""
    path = Path(recorded)
    return path if path.is_absolute() else store_dir / path


def check_ref(ref: WaveRef, store: Path) -> None:
    """FsdError naming the WAV if it is gone or its size changed since the store was written."""
    try:
        size = ref.path.stat().st_size
    except OSError:
        raise FsdError(f"WAV referenced by {store.name} is missing; rerun the features stage", ref.path) from None
    if size != ref.file_bytes:
        raise FsdError(f"WAV changed since the features stage wrote {store.name} ({size} bytes, "
                       f"{ref.file_bytes} recorded); rerun it", ref.path)


def map_samples(ref: WaveRef) -> np.ndarray:
    """The clip's samples as a read-only int16 view of the file mapped copy-on-write (no copy, no open file left:
    a subset of 20,000 clips fits under the usual limits on open files)."""
    import torch  # late: light stages that open stores need not load torch

    file = torch.from_file(str(ref.path), shared=False, size=ref.file_bytes // 2, dtype=torch.int16)
    view = file[ref.offset // 2 : ref.offset // 2 + ref.samples].numpy()
    view.flags.writeable = False
    return view
