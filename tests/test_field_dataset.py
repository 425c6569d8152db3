"""The field dataset generator (scripts/make_field_dataset.py): a tiny root that fsdlib's reader accepts."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pipeline import load_script

from fsdlib.audio import load_wav
from fsdlib.dataset import read_dataset
from fsdlib.vocabulary import CLASSES_80

SCALE = 0.1


field = load_script("make_field_dataset")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("field") / "root"
    field.main([str(out), "--seed", "3", "--scale", str(SCALE)])
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _hf_share(path: Path) -> float:
    """Share of a clip's energy above 8 kHz."""
    x = sf.read(str(path))[0]
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(power[np.fft.rfftfreq(len(x), 1 / 44100) > 8000].sum() / power.sum())


def test_reader_accepts_root(root: Path) -> None:
    data = read_dataset(root)
    assert data.classes == CLASSES_80
    assert [len(s) for s in data.subsets()] == [round(n * SCALE) for n in field.COUNTS.values()]
    assert set(data.test.usage) == {"Public", "Private"}
    populated = {CLASSES_80[j] for s in data.subsets() for j in np.flatnonzero(s.labels.sum(0))}
    assert populated == set(field.FIELD_CLASSES)
    assert [p.name for p in root.parent.iterdir()] == ["root"]  # no temporary left beside it


def test_class_coverage(root: Path) -> None:
    assert len(field.FIELD_CLASSES) == 12 and set(field.FIELD_CLASSES) <= set(CLASSES_80)
    data = read_dataset(root)
    for subset in (data.curated, data.test):
        assert (subset.labels.sum(0) > 0).sum() == 12, subset.name


def test_multi_labels_are_quoted(root: Path) -> None:
    text = (root / "train_curated.csv").read_text()
    rows = _rows(root / "train_curated.csv")
    multi = [r["labels"] for r in rows if "," in r["labels"]]
    assert 0 < len(multi) < len(rows)
    for labels in multi:
        assert f'"{labels}"' in text
    test_rows = _rows(root / "test_post_competition.csv")
    assert list(test_rows[0]) == ["fname", "labels", "usage", "freesound_id", "license"]
    assert any("," in r["labels"] for r in test_rows)


def test_noisy_part_has_wrong_labels_and_another_domain(root: Path) -> None:
    truth = _rows(root / "noisy_true_labels.csv")
    assert [r["fname"] for r in truth] == [r["fname"] for r in _rows(root / "train_noisy.csv")]
    wrong = np.mean([r["labels"] != r["true_labels"] for r in truth])
    assert 0.15 < wrong < 0.6
    noisy = sorted((root / "train_noisy").glob("*.wav"))
    curated = [p for p in sorted((root / "train_curated").glob("*.wav")) if np.any(sf.read(str(p))[0])]
    assert min(sf.info(str(p)).duration for p in noisy) >= 1.0
    assert np.median([_hf_share(p) for p in noisy]) < np.median([_hf_share(p) for p in curated]) / 3


def test_quirks_and_wav_format(root: Path) -> None:
    data = read_dataset(root)
    silent = [i for i, p in enumerate(data.curated.paths()) if not load_wav(p).any()]
    assert len(silent) == 1 and data.curated.labels[silent[0]].sum() >= 1
    for subset in (data.curated, data.test):
        assert min(sf.info(str(p)).duration for p in subset.paths()) < 0.5, subset.name
    for subset in data.subsets():
        for path in subset.paths():
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_deterministic_from_seed_and_replaces_root(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    field.write_dataset(first, seed=5, scale=0.03)
    field.write_dataset(second, seed=5, scale=0.03)
    assert _digest(first) == _digest(second)
    field.write_dataset(second, seed=6, scale=0.03)
    assert _digest(first) != _digest(second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
