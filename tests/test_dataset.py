from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import CLASSES, make_root, write_wav

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
        ("train_curated.csv", lambda d: d.drop(columns=["labels"]), "missing column"),
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


def test_bom_crlf_and_spaces_accepted(tiny_root: Path) -> None:
    path = tiny_root / "train_curated.csv"
    df = pd.read_csv(path, dtype=str)
    df["labels"] = [" " + f.replace(",", " , ") + " " for f in df["labels"]]
    text = df.to_csv(index=False, lineterminator="\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    ds = read_dataset(tiny_root)
    assert ds.curated.labels.sum() >= len(ds.curated)


def test_missing_root_and_csv(tmp_path: Path) -> None:
    with pytest.raises(FsdError, match="dataset root not found"):
        read_dataset(tmp_path / "nope")
    root = make_root(tmp_path / "r")
    (root / "train_noisy.csv").unlink()
    with pytest.raises(FsdError, match="train_noisy.csv"):
        read_dataset(root)


def test_audio_reader(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from fsdlib.audio import load_wav

    plain = load_wav(write_wav(tmp_path / "a.wav", seconds=0.1))
    assert plain.dtype == np.int16 and plain.shape == (4410,)
    stereo = load_wav(write_wav(tmp_path / "b.wav", seconds=0.1, sr=48000, channels=2))
    assert stereo.dtype == np.int16 and abs(len(stereo) - 4410) <= 1
    assert "downmixed 2 channels" in caplog.text and "48000 Hz" in caplog.text
    trunc = tmp_path / "t.wav"
    trunc.write_bytes((tmp_path / "a.wav").read_bytes()[:-1000])
    with pytest.raises(FsdError, match="truncated"):
        load_wav(trunc)
    sf.write(str(tmp_path / "e.wav"), np.zeros(0, np.int16), 44100, subtype="PCM_16")
    with pytest.raises(FsdError, match="empty WAV"):
        load_wav(tmp_path / "e.wav")
    (tmp_path / "z.wav").write_bytes(b"")
    with pytest.raises(FsdError, match="empty file"):
        load_wav(tmp_path / "z.wav")
    (tmp_path / "x.wav").write_text("this is not audio")
    with pytest.raises(FsdError, match="not a WAV"):
        load_wav(tmp_path / "x.wav")
