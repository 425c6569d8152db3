"""Reading an FSDKaggle2019 root: vocabulary, multi-hot labels, optional test labels, and one clear line for each
broken or missing CSV and WAV."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES, make_root

from fsdlib.dataset import read_dataset, read_vocabulary
from fsdlib.errors import FsdError


def test_reads_vocabulary_and_labels(tiny_root: Path) -> None:
    ds = read_dataset(tiny_root)
    assert ds.classes == tuple(CLASSES)
    assert read_vocabulary(tiny_root) == tuple(CLASSES)
    df = pd.read_csv(tiny_root / "train_curated.csv")
    for i, field in enumerate(df["labels"]):
        expected = np.zeros(len(CLASSES), np.float32)
        for name in field.split(","):
            expected[CLASSES.index(name)] = 1
        np.testing.assert_array_equal(ds.curated.labels[i], expected)
    assert ds.curated.fnames == tuple(df["fname"])
    assert ds.test.labels is not None and ds.test.labels.shape == (4, 4)
    assert set(ds.test.usage) == {"Public", "Private"}
    assert all(p.is_file() for s in ds.subsets() for p in s.paths())


def test_test_labels_optional(tmp_path: Path) -> None:
    ds = read_dataset(make_root(tmp_path / "r", test_labels=False))
    assert ds.test.labels is None and ds.test.usage is None and len(ds.test) == 4


def _rewrite(path: Path, edit) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(df).to_csv(path, index=False)


@pytest.mark.parametrize(
    ("csv", "edit", "message"),
    [
        ("train_curated.csv", lambda d: d.assign(labels=["Not_a_class"] + list(d["labels"][1:])), "unknown class"),
        ("train_noisy.csv", lambda d: pd.concat([d, d.iloc[:1]]), "duplicate fname"),
        ("train_curated.csv", lambda d: d.assign(labels=[""] + list(d["labels"][1:])), "empty labels"),
        ("train_curated.csv", lambda d: pd.concat([d, d.iloc[:1]]), "duplicate fname"),
        ("train_curated.csv", lambda d: d.drop(columns=["labels"]), "missing column"),
        ("train_curated.csv", lambda d: d.rename(columns={"fname": "name"}), "missing column"),
        ("test_post_competition.csv", lambda d: d.assign(usage="Hidden"), "usage must be"),
    ],
)
def test_bad_csv_names_file_and_problem(tiny_root: Path, csv: str, edit, message: str) -> None:
    _rewrite(tiny_root / csv, edit)
    with pytest.raises(FsdError, match=message) as info:
        read_dataset(tiny_root)
    assert csv in str(info.value)


def test_missing_wav_is_named(tiny_root: Path) -> None:
    (tiny_root / "train_noisy" / "n0000003.wav").unlink()
    with pytest.raises(FsdError, match="n0000003.wav.*missing"):
        read_dataset(tiny_root)


def test_bom_crlf_and_spaced_labels_read_as_the_clean_csv(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    csv = root / "train_noisy.csv"
    df = pd.read_csv(csv)
    df["labels"] = [f"  {lab.replace(',', ' ,  ')} " for lab in df["labels"]]
    csv.write_bytes(b"\xef\xbb\xbf" + df.to_csv(index=False, lineterminator="\r\n").encode())
    expected = read_dataset(make_root(tmp_path / "clean")).noisy.labels
    np.testing.assert_array_equal(read_dataset(root).noisy.labels, expected)


def test_missing_root_and_csv(tmp_path: Path) -> None:
    with pytest.raises(FsdError, match="dataset root not found"):
        read_dataset(tmp_path / "nope")
    root = make_root(tmp_path / "r")
    (root / "train_noisy.csv").unlink()
    with pytest.raises(FsdError, match="train_noisy.csv"):
        read_dataset(root)
