"""Importing one's own labelled audio into the dataset layout the pipeline reads (docs/method.md §12).

Sources are a folder per class (files at any depth below `<root>/<class>/`) or a CSV of file names and labels.
The import writes a new root: `train_curated.csv`, `train_noisy.csv` (header only without a noisy source),
`sample_submission.csv`, `test_post_competition.csv` when the test clips are labelled, and every clip as 44.1 kHz
16-bit mono WAV. Sources are only read, never modified.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from fsdlib.audio import AUDIO_SUFFIXES, SAMPLE_RATE, read_audio
from fsdlib.dataset import USAGES, read_string_csv
from fsdlib.errors import FsdError
from fsdlib.layout import FOLDERS, Row, new_root, write_csvs, write_wav

log = logging.getLogger(__name__)

PARTS = ("curated", "noisy", "test")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Clip:
    """One source file, the name it gets in the new root, its labels, and where it was listed (for errors)."""

    source: Path
    name: str
    labels: tuple[str, ...]
    origin: str
    split: str | None = None  # "train" or "test" from a split column; None: decided by the test fraction


@dataclass(frozen=True)
class ImportPlan:
    """What the new root will hold: the class order and the clips of each part (test labels may be absent)."""

    classes: tuple[str, ...]
    curated: tuple[Clip, ...]
    noisy: tuple[Clip, ...]
    test: tuple[Clip, ...]
    test_labelled: bool

    def parts(self) -> dict[str, tuple[Clip, ...]]:
        return {"curated": self.curated, "noisy": self.noisy, "test": self.test}


def output_name(path: Path) -> str:
    """The clip's file name in the new root: its stem with a .wav suffix."""
    return f"{path.stem}.wav"


def audio_files(folder: Path) -> list[Path]:
    """Every audio file (AUDIO_SUFFIXES, any case) below `folder`, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def clips_from_folders(root: Path) -> list[Clip]:
    """A folder per class: each audio file below `<root>/<class>/` gets that class; the same file name under several
    class folders is one clip with all their labels (its copies must be identical)."""
    root = Path(root)
    if not root.is_dir():
        raise FsdError("class folder root not found", root)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FsdError("no class folders (expected <root>/<class>/<audio files>)", root)
    clips = []
    for folder in classes:
        files = audio_files(folder)
        if not files:
            raise FsdError(f"class folder holds no audio files ({', '.join(AUDIO_SUFFIXES)})", folder)
        clips += [Clip(f, output_name(f), (folder.name,), str(f)) for f in files]
    return merge_duplicates(clips)


def clips_from_csv(csv: Path, audio_dir: Path | None = None, filename_column: str = "fname",
                   label_column: str = "labels", separator: str = ",", split_column: str | None = None,
                   labelled: bool = True) -> list[Clip]:
    """Clips listed in a CSV: a file name column (relative to `audio_dir`, default the CSV's folder) and a label
    column of one or several labels joined by `separator`; an optional split column says train or test."""
    csv = Path(csv)
    wanted = [filename_column] + ([label_column] if labelled else []) + ([split_column] if split_column else [])
    df = read_string_csv(csv, wanted)
    if not separator:
        raise FsdError("the label separator must not be empty", csv)
    audio_dir = Path(audio_dir) if audio_dir is not None else csv.parent
    clips = []
    for i, row in enumerate(df.to_dict("records")):
        where = f"{csv} row {i + 2}"
        fname = row[filename_column].strip()
        if not fname:
            raise FsdError(f"empty {filename_column!r}", where)
        path = audio_dir / fname
        if not path.is_file():
            raise FsdError(f"audio file {fname!r} not found in {audio_dir}", where)
        labels: tuple[str, ...] = ()
        if labelled:
            labels = tuple(dict.fromkeys(n.strip() for n in row[label_column].split(separator) if n.strip()))
            if not labels:
                raise FsdError(f"empty labels for {fname!r}", where)
        split = row[split_column].strip().lower() if split_column else None
        if split is not None and split not in SPLITS:
            raise FsdError(f"split must be one of {', '.join(SPLITS)}, got {row[split_column]!r}", where)
        clips.append(Clip(path, output_name(path), labels, where, split))
    if not clips:
        raise FsdError("no rows", csv)
    return merge_duplicates(clips)


def clips_from_audio(folder: Path) -> list[Clip]:
    """Unlabelled clips (a test part without labels): every audio file below `folder`."""
    files = audio_files(Path(folder)) if Path(folder).is_dir() else []
    if not files:
        raise FsdError(f"no audio files ({', '.join(AUDIO_SUFFIXES)})", folder)
    return merge_duplicates([Clip(f, output_name(f), (), str(f)) for f in files])


def merge_duplicates(clips: Iterable[Clip]) -> list[Clip]:
    """One clip per output name: identical files listed under one name are merged with the union of their labels;
    different files (or different splits) under one name are an error naming both."""
    by_name: dict[str, Clip] = {}
    for clip in clips:
        seen = by_name.get(clip.name)
        if seen is None:
            by_name[clip.name] = clip
            continue
        if seen.source != clip.source and _digest(seen.source) != _digest(clip.source):
            raise FsdError(f"duplicate name {clip.name!r}: {seen.origin} and {clip.origin} are different files")
        if seen.split != clip.split:
            raise FsdError(f"{clip.name!r} is listed as {seen.split} ({seen.origin}) and {clip.split} ({clip.origin})")
        by_name[clip.name] = replace(seen, labels=tuple(dict.fromkeys(seen.labels + clip.labels)))
    return list(by_name.values())


def _digest(path: Path) -> str:
    """sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def vocabulary(clip_sets: Sequence[Sequence[Clip]], given: Sequence[str] | None = None) -> tuple[str, ...]:
    """The class order: `given` (every label must be in it), else the sorted labels of all clips."""
    used = {label for clips in clip_sets for clip in clips for label in clip.labels}
    for name in used | set(given or ()):
        if "," in name or not name.strip():
            raise FsdError(f"class name {name!r} must be non-empty and hold no comma")
    if given is None:
        return tuple(sorted(used))
    if len(set(given)) != len(given):
        raise FsdError(f"the given class list repeats a class: {', '.join(given)}")
    for clips in clip_sets:
        for clip in clips:
            unknown = [label for label in clip.labels if label not in given]
            if unknown:
                raise FsdError(f"label {unknown[0]!r} of {clip.name!r} is not in the given class list", clip.origin)
    return tuple(given)


def split_test(clips: Sequence[Clip], test_fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Train and test clips: by each clip's split where a split column gave one, else a multi-label stratified
    random `test_fraction` of the clips."""
    if any(c.split is not None for c in clips):
        return [c for c in clips if c.split == "train"], [c for c in clips if c.split == "test"]
    if not 0 < test_fraction < 1:
        raise FsdError(f"test fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if len(clips) < 2:
        raise FsdError(f"{len(clips)} labelled clip(s): too few to hold out a test part")
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    classes = sorted({label for c in clips for label in c.labels})
    y = np.array([[label in c.labels for label in classes] for c in clips], dtype=np.int64)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    train_idx, test_idx = next(splitter.split(np.zeros((len(clips), 1)), y))
    return [clips[i] for i in sorted(train_idx)], [clips[i] for i in sorted(test_idx)]


def make_plan(curated: Sequence[Clip], noisy: Sequence[Clip] = (), unlabelled_test: Sequence[Clip] = (),
              test_fraction: float = 0.2, seed: int = 0, classes: Sequence[str] | None = None) -> ImportPlan:
    """Split the labelled source into curated and test (unless unlabelled test clips are given), fix the class
    order, and check that no clip name is used twice across parts."""
    if unlabelled_test:
        train, test = [c for c in curated if c.split != "test"], list(unlabelled_test)
    else:
        train, test = split_test(curated, test_fraction, seed)
    if not train or not test:
        raise FsdError(f"the split leaves {len(train)} training and {len(test)} test clips; both must be non-empty")
    order = vocabulary([train, noisy, test], classes)
    seen: dict[str, str] = {}
    for part, clips in (("curated", train), ("noisy", noisy), ("test", test)):
        for clip in clips:
            if clip.name in seen:
                raise FsdError(f"duplicate name {clip.name!r} in the {seen[clip.name]} and {part} parts", clip.origin)
            seen[clip.name] = part
    return ImportPlan(order, tuple(train), tuple(noisy), tuple(test), test_labelled=not unlabelled_test)


def write_root(plan: ImportPlan, dest: Path, public_fraction: float = 0.25, seed: int = 0,
               progress: bool = True) -> pd.DataFrame:
    """Write the planned root at `dest` (which must not exist), all at once; return clips and seconds per class and
    part (`summary`)."""
    from fsdlib.progress import progress_bar

    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FsdError("destination exists and is not an empty folder (an import never overwrites)", dest)
    for clip in (c for clips in plan.parts().values() for c in clips):
        if clip.source.resolve().is_relative_to(dest.resolve()):
            raise FsdError(f"destination holds a source file ({clip.source}); choose a folder outside the sources",
                           dest)
    seconds: dict[str, float] = {}
    with new_root(dest) as tmp:
        for part, clips in plan.parts().items():
            with progress_bar(f"import {part}", len(clips), enabled=progress) as advance:
                for clip in clips:
                    seconds[clip.name] = _write_wav(clip, tmp / FOLDERS[part] / clip.name)
                    advance()
        # The sample submission's 0.0 and test labels without Freesound columns: as imports have always written them.
        write_csvs(tmp, plan.classes, _rows(plan.curated), _rows(plan.noisy), _test_rows(plan.test, public_fraction, seed),
                   test_labels=plan.test_labelled, freesound=False, fill=0.0)
    return summary(plan, seconds)


def _write_wav(clip: Clip, path: Path) -> float:
    """The clip as 44.1 kHz 16-bit mono WAV (a byte copy when the source already is one); its length in seconds."""
    wave = read_audio(clip.source)
    if clip.source.suffix.lower() == ".wav" and _is_canonical(clip.source):
        shutil.copyfile(clip.source, path)
    else:
        write_wav(path, wave)
    return len(wave) / SAMPLE_RATE


def _is_canonical(path: Path) -> bool:
    info = sf.info(str(path))
    return info.channels == 1 and info.samplerate == SAMPLE_RATE and info.subtype == "PCM_16"


def _rows(clips: Sequence[Clip]) -> list[Row]:
    """The clips' label CSV rows: file name and labels."""
    return [Row(c.name, c.labels) for c in clips]


def _test_rows(clips: Sequence[Clip], public_fraction: float, seed: int) -> list[Row]:
    """The test clips' rows, a random `public_fraction` of them Public and the rest Private, as in the competition."""
    public = set(np.random.default_rng(seed).permutation(len(clips))[: round(public_fraction * len(clips))].tolist())
    return [Row(c.name, c.labels, USAGES[0] if i in public else USAGES[1]) for i, c in enumerate(clips)]


def summary(plan: ImportPlan, seconds: dict[str, float]) -> pd.DataFrame:
    """Clips and seconds per class (rows) and part (columns "<part> clips", "<part> s"), then a row of all clips (a
    multi-label clip counts once per label above it, once in it); an unlabelled test part is "(unlabelled)"."""
    rows = {}
    for part, clips in plan.parts().items():
        for clip in clips:
            for label in clip.labels or ("(unlabelled)",):
                row = rows.setdefault(label, {f"{p} {k}": 0.0 for p in PARTS for k in ("clips", "s")})
                row[f"{part} clips"] += 1
                row[f"{part} s"] += seconds.get(clip.name, 0.0)
    order = [c for c in plan.classes if c in rows] + [c for c in rows if c not in plan.classes]
    rows = {c: rows[c] for c in order}
    rows["(all clips)"] = {f"{part} {k}": (len(clips) if k == "clips" else sum(seconds.get(c.name, 0.0) for c in clips))
                           for part, clips in plan.parts().items() for k in ("clips", "s")}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "class"
    return table.astype({f"{p} clips": int for p in PARTS}).round(1)
