"""Hostile inputs: each is either accepted (with a documented conversion) or refused with one clear line."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import make_root, write_wav

from fsdlib.audio import SAMPLE_RATE, load_wav
from fsdlib.dataset import read_dataset
from fsdlib.errors import FsdError
from fsdlib.features import LogMelConfig, build_feature_store
from fsdlib.store import FeatureStore

ACCEPTED = {  # name: (seconds, sample rate, channels, subtype)
    "short_0.05s.wav": (0.05, 44100, 1, "PCM_16"),
    "long_30s.wav": (30.0, 44100, 1, "PCM_16"),
    "pcm_u8.wav": (0.3, 44100, 1, "PCM_U8"),
    "pcm_24.wav": (0.3, 44100, 1, "PCM_24"),
    "float32.wav": (0.3, 44100, 1, "FLOAT"),
    "stereo.wav": (0.3, 44100, 2, "PCM_16"),
    "six_channels.wav": (0.3, 44100, 6, "PCM_16"),
    "rate_8k.wav": (0.3, 8000, 1, "PCM_16"),
    "rate_22k.wav": (0.3, 22050, 1, "PCM_16"),
    "rate_96k.wav": (0.3, 96000, 1, "PCM_16"),
    "spaces and ünïcödé 音.wav": (0.3, 44100, 1, "PCM_16"),
}


def _accepted(folder: Path) -> dict[str, Path]:
    out = {name: write_wav(folder / name, seconds=s, sr=sr, channels=ch, subtype=st, seed=i)
           for i, (name, (s, sr, ch, st)) in enumerate(ACCEPTED.items())}
    silent = folder / "silent.wav"
    sf.write(str(silent), np.zeros(SAMPLE_RATE // 2, np.int16), SAMPLE_RATE, subtype="PCM_16")
    out["silent.wav"] = silent
    return out


def _refused(folder: Path) -> dict[str, tuple[Path, str]]:
    """Broken files and the words the error must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_wav(folder / "good_source.wav", seconds=0.3).read_bytes()
    cases = {
        "truncated.wav": (good[: len(good) // 2], "truncated"),
        "zero_bytes.wav": (b"", "empty file"),
        "wrong_header.wav": (b"RIFX" + good[4:8] + b"JUNK" + good[12:], "not a WAV"),
        "text.wav": (b"hello, I am not audio at all\n" * 10, "not a WAV"),
        "bad_format_chunk.wav": (good[:20] + b"\xff\xff" + good[22:], "unreadable"),
    }
    out = {}
    for name, (data, words) in cases.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, words)
    (folder / "good_source.wav").unlink()
    return out


def test_accepted_inputs_become_mono_int16_44k(tmp_path: Path) -> None:
    for name, path in _accepted(tmp_path).items():
        wave = load_wav(path)
        seconds, rate, _, _ = ACCEPTED.get(name, (0.5, SAMPLE_RATE, 1, ""))
        assert wave.dtype == np.int16 and wave.ndim == 1, name
        assert abs(len(wave) - round(seconds * SAMPLE_RATE)) <= 2, name


def test_conversions_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = _accepted(tmp_path)
    load_wav(paths["six_channels.wav"])
    load_wav(paths["rate_96k.wav"])
    load_wav(paths["pcm_24.wav"])
    assert "downmixed 6 channels" in caplog.text
    assert "resampled 96000 Hz" in caplog.text
    assert "converted PCM_24 to 16-bit PCM" in caplog.text


def test_refused_inputs_name_file_and_problem(tmp_path: Path) -> None:
    for name, (path, words) in _refused(tmp_path).items():
        with pytest.raises(FsdError) as info:
            load_wav(path)
        message = str(info.value)
        assert str(path) in message and words in message, (name, message)
        assert "\n" not in message


def test_feature_store_of_hostile_but_valid_clips_is_finite(tmp_path: Path) -> None:
    paths = _accepted(tmp_path / "wavs")
    build_feature_store(list(paths.items()), tmp_path / "out" / "hostile", LogMelConfig(), progress=False)
    store = FeatureStore.open(tmp_path / "out" / "hostile.logmel.arrow")
    assert store.fnames == list(paths)
    for i in range(len(store)):
        assert np.isfinite(store[i]).all() and len(store[i]) >= 1
    assert not store.get("silent.wav").any()


def test_feature_store_stops_at_a_broken_clip_and_leaves_nothing(tmp_path: Path) -> None:
    good = _accepted(tmp_path / "wavs")
    path, _ = _refused(tmp_path / "bad")["truncated.wav"]
    items = [*list(good.items())[:3], ("truncated.wav", path)]
    with pytest.raises(FsdError, match="truncated"):
        build_feature_store(items, tmp_path / "out" / "x", LogMelConfig(), progress=False)
    leftovers = list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else []
    assert leftovers == []  # neither the stores nor their temporary files


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("fname,labels", "name,labels"), "missing column"),
        (lambda t: t.replace(t.splitlines()[1].split(",")[0], t.splitlines()[2].split(",")[0], 1), "duplicate fname"),
        (lambda t: t.replace(t.splitlines()[1], t.splitlines()[1].split(",")[0] + ",Unicorn"), "unknown class"),
        (lambda t: t.replace(t.splitlines()[1], t.splitlines()[1].split(",")[0] + ","), "empty labels"),
    ],
)
def test_bad_csvs(tmp_path: Path, edit, message: str) -> None:
    root = make_root(tmp_path / "root")
    csv = root / "train_curated.csv"
    csv.write_text(edit(csv.read_text()))
    with pytest.raises(FsdError, match=message) as info:
        read_dataset(root)
    assert "train_curated.csv" in str(info.value)


def test_csv_with_bom_crlf_and_spaced_labels_is_accepted(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    csv = root / "train_noisy.csv"
    df = pd.read_csv(csv)
    df["labels"] = [f'  {lab.replace(",", " ,  ")} ' for lab in df["labels"]]
    csv.write_bytes(b"\xef\xbb\xbf" + df.to_csv(index=False, lineterminator="\r\n").encode())
    expected = read_dataset(make_root(tmp_path / "clean")).noisy.labels
    np.testing.assert_array_equal(read_dataset(root).noisy.labels, expected)
