"""Writing an FSDKaggle2019-layout root: its folder and CSV names, CSV columns and WAV format, in one place.

Every writer of a root uses it: the demo data (fsdlib/synth.py), `fsd import` (fsdlib/importer.py) and the field and
scale datasets (scripts/make_field_dataset.py, scripts/make_scale_dataset.py); fsdlib/dataset.py reads what it writes
(docs/method.md §1).
"""

from __future__ import annotations

import csv
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsdlib.atomic import atomic_dir
from fsdlib.audio import SAMPLE_RATE

FOLDERS = {"curated": "train_curated", "noisy": "train_noisy", "test": "test"}  # part -> its audio folder
LABEL_CSVS = {"curated": "train_curated.csv", "noisy": "train_noisy.csv"}
SAMPLE_SUBMISSION = "sample_submission.csv"  # its columns after fname are the class order
TEST_LABELS = "test_post_competition.csv"
TRAIN_COLUMNS = ("fname", "labels")
TEST_COLUMNS = ("fname", "labels", "usage", "freesound_id", "license")
LICENSES = ("CC0", "CC-BY", "CC-BY-NC", "CC Sampling+")  # the licences of FSDKaggle2019's clips


@dataclass(frozen=True)
class Row:
    """One clip's CSV row: its file name and class names; a test clip's usage, Freesound id and licence."""

    fname: str
    labels: tuple[str, ...] = ()
    usage: str = ""
    freesound_id: int = 0
    license: str = ""


@contextmanager
def new_root(path: str | Path) -> Iterator[Path]:
    """A temporary root holding the empty audio folders; it replaces `path` only if the block succeeds (atomic)."""
    with atomic_dir(path) as tmp:
        for folder in FOLDERS.values():
            (tmp / folder).mkdir()
        yield tmp


def wav_header(n_samples: int) -> bytes:
    """The 44-byte header of a 16-bit mono 44.1 kHz PCM WAV of `n_samples` samples."""
    data = 2 * n_samples
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, 2 * SAMPLE_RATE, 2, 16)
            + b"data" + struct.pack("<I", data))


def write_wav(path: str | Path, samples: np.ndarray) -> None:
    """Mono int16 samples as a canonical WAV (header, then samples): what fsdlib.audio.pcm16_data reads in place."""
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"expected mono int16 samples, got {samples.dtype} of shape {samples.shape}")
    with Path(path).open("wb") as f:
        f.write(wav_header(len(samples)))
        f.write(samples.astype("<i2", copy=False).tobytes())


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A CSV as the competition's: "\\n" line ends, a field quoted only when it must be (several labels)."""
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_csvs(root: str | Path, classes: Sequence[str], curated: Iterable[Row], noisy: Iterable[Row],
               test: Sequence[Row], *, test_labels: bool = True, freesound: bool = True, fill: float = 0) -> None:
    """The root's CSVs, rows in the order given: the curated and noisy label CSVs, sample_submission.csv (one `fill`
    per class) and, if `test_labels`, test_post_competition.csv (its Freesound columns only if `freesound`)."""
    root = Path(root)
    for part, rows in (("curated", curated), ("noisy", noisy)):
        write_csv(root / LABEL_CSVS[part], TRAIN_COLUMNS, ([r.fname, ",".join(r.labels)] for r in rows))
    write_csv(root / SAMPLE_SUBMISSION, ["fname", *classes], ([r.fname, *[fill] * len(classes)] for r in test))
    if test_labels:
        columns = TEST_COLUMNS if freesound else TEST_COLUMNS[:3]
        cells = ([r.fname, ",".join(r.labels), r.usage, r.freesound_id, r.license][: len(columns)] for r in test)
        write_csv(root / TEST_LABELS, columns, cells)
