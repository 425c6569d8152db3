"""Tagging audio files: reading them, windows of long recordings, the top labels, and rendering them as text.

What does not depend on how a model computes: `TaggerBase` tags files and windows through its `predict`, which
the torch ensemble (fsdlib/tagger.py) and the ONNX graph on onnxruntime (fsdlib/onnx_tagger.py) each provide.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fsdlib.audio import AUDIO_SUFFIXES, float_to_int16, read_any, read_windows
from fsdlib.errors import FsdError, check_choice

if TYPE_CHECKING:  # pandas is imported when a DataFrame is asked for: `fsd tag` starts faster without it
    import pandas as pd

FORMATS = ("table", "csv", "json")
TAGGER_FORMAT, TAGGER_VERSION = "fsdlib-tagger", 1  # of the exported file (fsdlib/export.py)


def check_tagger_file(payload: object, path: str | Path) -> dict:
    """An exported file's contents, after checking that it is a tagger file of the version this fsdlib reads."""
    if not isinstance(payload, dict) or payload.get("format") != TAGGER_FORMAT:
        raise FsdError(f"not an fsdlib tagger file (no format {TAGGER_FORMAT!r})", path)
    if payload.get("version") != TAGGER_VERSION:
        raise FsdError(f"tagger file format version {payload.get('version')} (this fsdlib reads version "
                       f"{TAGGER_VERSION}: export it again with this version)", path)
    return payload


@dataclass(frozen=True)
class Tag:
    """The result for one file, or one window of it (`start`, `end` in seconds): top labels with scores, or the
    error that stopped it."""

    path: Path
    labels: tuple[tuple[str, float], ...] = ()
    error: str | None = None
    start: float | None = None
    end: float | None = None

    def where(self) -> dict[str, float]:
        """The window's start and end, rounded to ms; empty for a whole file."""
        return {} if self.start is None or self.end is None else {"start": round(self.start, 3),
                                                                  "end": round(self.end, 3)}


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given, and every audio file (WAV, FLAC, OGG, MP3) under a given folder (sorted); a missing path is
    kept to report it."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES))
        else:
            out.append(path)
    return out


def render_tags(tags: Sequence[Tag], fmt: str) -> str:
    """Tags as text in one of `FORMATS`: a tab-separated table, CSV (one row per label) or JSON; windows of a
    recording (`fsd tag --segment`) add their start and end times."""
    check_choice("format", fmt, FORMATS)
    windows = any(t.start is not None for t in tags)
    if fmt == "json":
        rows = [{"file": str(t.path), **t.where(), "error": t.error} if t.error else
                {"file": str(t.path), **t.where(),
                 "labels": [{"label": c, "score": round(s, 6)} for c, s in t.labels]}
                for t in tags]
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        lines = ["file,start,end,rank,label,score,error" if windows else "file,rank,label,score,error"]
        for t in tags:
            times = f"{t.start:.3f},{t.end:.3f}," if windows and t.start is not None else ",," if windows else ""
            if t.error:
                lines.append(f"\"{t.path}\",{times},,,\"{t.error}\"")
            lines += [f"\"{t.path}\",{times}{r},{c},{s:.6f}," for r, (c, s) in enumerate(t.labels, 1)]
        return "\n".join(lines) + "\n"
    lines = []
    for t in tags:
        shown = f"error: {t.error}" if t.error else "  ".join(f"{c} {s:.3f}" for c, s in t.labels)
        times = f"\t{t.start:.2f}-{t.end:.2f} s" if t.start is not None else ""
        lines.append(f"{t.path}{times}\t{shown}")
    return "\n".join(lines) + "\n"


class TaggerBase:
    """Tags files and windows with `predict` (int16 waveforms at 44.1 kHz -> (n, n_classes) probabilities) over
    the class names `classes`."""

    classes: list[str]

    def predict(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def scores(self, items: Sequence[str | Path | np.ndarray]) -> pd.DataFrame:
        """The ensemble's probability of every class (columns) for each item (rows): audio files of any supported
        format, or waveforms (int16, or float in [-1, 1]) at 44.1 kHz. A file that cannot be read is an error."""
        import pandas as pd

        waves, names = [], []
        for i, item in enumerate(items):
            if isinstance(item, np.ndarray):
                waves.append((item if item.dtype == np.int16 else float_to_int16(item)).reshape(-1))
                names.append(f"array {i}")
            else:
                waves.append(read_any(item))
                names.append(str(item))
        if not waves:
            return pd.DataFrame(columns=self.classes)
        return pd.DataFrame(self.predict(waves), index=pd.Index(names, name="input"), columns=self.classes)

    def tag_files(self, paths: Sequence[Path], top_k: int = 3, chunk: int = 128) -> Iterator[Tag]:
        """Tag files in order; an unreadable file yields a Tag with its error and does not stop the others."""
        for start in range(0, len(paths), chunk):
            good: list[tuple[Path, np.ndarray]] = []
            results: dict[Path, Tag] = {}
            for path in paths[start : start + chunk]:
                try:
                    good.append((path, read_any(path)))
                except FsdError as exc:
                    results[path] = Tag(path, error=exc.problem)
            if good:
                probs = self.predict([w for _, w in good])
                for (path, _), row in zip(good, probs, strict=True):
                    order = np.argsort(-row, kind="stable")[:top_k]
                    results[path] = Tag(path, tuple((self.classes[j], float(row[j])) for j in order))
            for path in paths[start : start + chunk]:
                yield results[path]

    def tag_windows(self, paths: Sequence[Path], segment: float, hop: float, top_k: int = 3,
                    batch: int = 32) -> Iterator[Tag]:
        """Tag each `segment`-second window, every `hop` seconds, of recordings of any length: windows are read
        and predicted `batch` at a time, so memory does not grow with the recording. An unreadable file yields a
        Tag with its error (after the windows read before the damage) and does not stop the others."""
        for path in paths:
            pending: list[tuple[float, float, np.ndarray]] = []
            try:
                for window in read_windows(path, segment, hop):
                    pending.append(window)
                    if len(pending) == batch:
                        yield from self._top(path, pending, top_k)
                        pending = []
                yield from self._top(path, pending, top_k)
            except FsdError as exc:
                yield from self._top(path, pending, top_k)
                yield Tag(path, error=exc.problem)

    def _top(self, path: Path, windows: list[tuple[float, float, np.ndarray]], top_k: int) -> Iterator[Tag]:
        """The top-k labels of each window."""
        if not windows:
            return
        probs = self.predict([w for _, _, w in windows])
        for (start, end, _), row in zip(windows, probs, strict=True):
            order = np.argsort(-row, kind="stable")[:top_k]
            yield Tag(path, tuple((self.classes[j], float(row[j])) for j in order), start=start, end=end)
