"""Reading an FSDKaggle2019 root: vocabulary, multi-hot labels and clip paths, validated with clear errors."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fsdlib.errors import FsdError
from fsdlib.layout import FOLDERS, SAMPLE_SUBMISSION, TEST_LABELS

log = logging.getLogger(__name__)

CURATED_CSVS = ("train_curated.csv", "train_curated_post_competition.csv")
NOISY_CSVS = ("train_noisy.csv", "train_noisy_post_competition.csv")
USAGES = ("Public", "Private")
SUBSETS = ("curated", "noisy", "test")


@dataclass(frozen=True)
class Subset:
    """One subset: clip names in CSV order, their WAV folder, multi-hot labels and (test only) usage."""

    name: str
    fnames: tuple[str, ...]
    wav_dir: Path
    labels: np.ndarray | None  # (n_clips, n_classes) float32 multi-hot, None when unlabelled
    usage: tuple[str, ...] | None = None  # "Public" / "Private" per clip (test with labels)

    def paths(self) -> list[Path]:
        """The WAV path of every clip, in order."""
        return [self.wav_dir / f for f in self.fnames]

    def __len__(self) -> int:
        return len(self.fnames)


@dataclass(frozen=True)
class Dataset:
    """An FSDKaggle2019 root: the class vocabulary (column order) and its three subsets."""

    root: Path
    classes: tuple[str, ...]
    curated: Subset
    noisy: Subset
    test: Subset

    def subsets(self) -> tuple[Subset, Subset, Subset]:
        return (self.curated, self.noisy, self.test)


def read_string_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """Read a CSV as strings (BOM and CRLF tolerated, header names stripped) and check its required columns."""
    if not path.is_file():
        raise FsdError("file not found", path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise FsdError(f"not a readable CSV ({str(exc).strip()})", path) from None
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise FsdError(f"missing column(s) {', '.join(missing)} (has: {', '.join(df.columns)})", path)
    return df


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a CSV as strings (`read_string_csv`); check unique, non-empty fnames."""
    df = read_string_csv(path, required)
    df["fname"] = df["fname"].str.strip()
    empty = df.index[df["fname"] == ""]
    if len(empty):
        raise FsdError(f"empty fname on row {empty[0] + 2}", path)
    dup = df["fname"][df["fname"].duplicated()]
    if len(dup):
        raise FsdError(f"duplicate fname {dup.iloc[0]!r} (first repeat on row {dup.index[0] + 2})", path)
    return df


def _first_existing(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise FsdError(f"none of {', '.join(names)} found", root)


def read_vocabulary(root: str | Path) -> tuple[str, ...]:
    """The class names in the column order of sample_submission.csv: the class index order everywhere."""
    path = Path(root) / SAMPLE_SUBMISSION
    df = _read_csv(path, ("fname",))
    classes = tuple(c for c in df.columns if c != "fname")
    if not classes:
        raise FsdError("no class columns after fname", path)
    if len(set(classes)) != len(classes):
        raise FsdError("duplicate class column", path)
    return classes


def parse_labels(df: pd.DataFrame, classes: tuple[str, ...], path: Path) -> np.ndarray:
    """Multi-hot matrix from the comma-separated `labels` field; unknown or empty labels are errors."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(df), len(classes)), dtype=np.float32)
    for row, field in enumerate(df["labels"]):
        names = [n.strip() for n in field.split(",")]
        names = [n for n in names if n]
        if not names:
            raise FsdError(f"empty labels for {df['fname'].iloc[row]!r} (row {row + 2})", path)
        for name in names:
            j = index.get(name)
            if j is None:
                raise FsdError(f"unknown class {name!r} for {df['fname'].iloc[row]!r} (row {row + 2})", path)
            out[row, j] = 1.0
    return out


def _check_wavs(subset: Subset, csv_path: Path) -> None:
    """Every listed clip must exist (cheap check; content is validated when features are computed)."""
    if not subset.wav_dir.is_dir():
        raise FsdError(f"audio folder {subset.wav_dir.name}/ not found (listed by {csv_path.name})", subset.wav_dir)
    present = {p.name for p in subset.wav_dir.iterdir()}
    for fname in subset.fnames:
        if fname not in present:
            raise FsdError(f"WAV listed in {csv_path.name} is missing", subset.wav_dir / fname)


def _read_train(root: Path, name: str, csv_names: tuple[str, ...], classes: tuple[str, ...]) -> Subset:
    path = _first_existing(root, csv_names)
    df = _read_csv(path, ("fname", "labels"))
    subset = Subset(name, tuple(df["fname"]), root / FOLDERS[name], parse_labels(df, classes, path))
    _check_wavs(subset, path)
    return subset


def _read_test(root: Path, classes: tuple[str, ...]) -> Subset:
    sub_path = root / SAMPLE_SUBMISSION
    fnames = tuple(_read_csv(sub_path, ("fname",))["fname"])
    labels = usage = None
    lab_path = root / TEST_LABELS
    if lab_path.is_file():
        df = _read_csv(lab_path, ("fname", "labels", "usage")).set_index("fname", drop=False)
        missing = [f for f in fnames if f not in df.index]
        if missing:
            raise FsdError(f"no labels for test clip {missing[0]!r} ({len(missing)} missing)", lab_path)
        df = df.loc[list(fnames)]
        bad = df.index[~df["usage"].isin(USAGES)]
        if len(bad):
            raise FsdError(f"usage must be Public or Private, got {df['usage'][bad[0]]!r} for {bad[0]!r}", lab_path)
        labels = parse_labels(df.reset_index(drop=True), classes, lab_path)
        usage = tuple(df["usage"])
    subset = Subset("test", fnames, root / FOLDERS["test"], labels, usage)
    _check_wavs(subset, sub_path)
    return subset


def read_dataset(root: str | Path) -> Dataset:
    """Read and validate an FSDKaggle2019 root (docs/method.md §1); raises FsdError naming file and problem."""
    root = Path(root)
    if not root.is_dir():
        raise FsdError("dataset root not found (set data.root in params.yaml)", root)
    classes = read_vocabulary(root)
    curated = _read_train(root, "curated", CURATED_CSVS, classes)
    noisy = _read_train(root, "noisy", NOISY_CSVS, classes)
    test = _read_test(root, classes)
    log.info("%s: %d classes, %d curated, %d noisy, %d test clips", root, len(classes), len(curated), len(noisy), len(test))
    return Dataset(root, classes, curated, noisy, test)


LABEL_COLUMNS = ("subset", "fname", "usage")


def label_table(dataset: Dataset) -> pd.DataFrame:
    """All clips' labels as one table (subset, fname, usage, one column per class in class order).

    The feature stage stores it beside the features, so training and scoring never reread the raw root.
    Unlabelled test clips get NaN labels.
    """
    parts = []
    for subset in dataset.subsets():
        n = len(subset)
        labels = subset.labels if subset.labels is not None else np.full((n, len(dataset.classes)), np.nan, np.float32)
        part = pd.DataFrame(labels, columns=list(dataset.classes))
        part.insert(0, "usage", list(subset.usage) if subset.usage is not None else [""] * n)
        part.insert(0, "fname", list(subset.fnames))
        part.insert(0, "subset", subset.name)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class Labels:
    """Labels of one subset read back from a label table, aligned with the feature store's order."""

    fnames: tuple[str, ...]
    targets: np.ndarray | None  # (n, C) float32, None when unlabelled
    usage: tuple[str, ...]


def read_label_table(path: str | Path) -> tuple[tuple[str, ...], dict[str, Labels]]:
    """Read a label table: the class order and each subset's labels."""
    path = Path(path)
    if not path.is_file():
        raise FsdError("label table not found (run the features stage)", path)
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise FsdError(f"unreadable label table ({exc})", path) from None
    if tuple(df.columns[:3]) != LABEL_COLUMNS:
        raise FsdError(f"label table must start with columns {LABEL_COLUMNS}", path)
    classes = tuple(df.columns[3:])
    out = {}
    for name, part in df.groupby("subset", sort=False):
        values = part[list(classes)].to_numpy(np.float32)
        targets = None if np.isnan(values).any() else values
        out[str(name)] = Labels(tuple(part["fname"]), targets, tuple(part["usage"]))
    for name in SUBSETS:  # a subset without clips (no noisy part) has no rows in the table
        out.setdefault(name, Labels((), np.zeros((0, len(classes)), np.float32), ()))
    return classes, out
