"""Waveform stores of layout `reference`: canonical WAVs read in place give exactly the copied store's samples."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import accepted_wavs, make_root
from pipeline import REPO, run

from fsdlib.audio import load_wav, pcm16_data
from fsdlib.dataset import read_dataset
from fsdlib.errors import FsdError
from fsdlib.features import build_feature_store
from fsdlib.settings import FeatureSettings
from fsdlib.store import FeatureStore, StoreWriter

CFG = {"n_mels": 16, "n_fft": 512, "hop_length": 256}


def with_list_chunk(path: Path, n: int, seed: int) -> Path:
    """A canonical WAV with a LIST chunk of odd length (padded) between fmt and data: samples at offset 70."""
    data = np.random.default_rng(seed).integers(-20_000, 20_000, n, dtype=np.int16).tobytes()
    info = b"INFOISFT\x05\x00\x00\x00fsdl\x00"  # 17 bytes: a pad byte follows
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 44100, 88200, 2, 16)
    body = b"WAVE" + fmt + b"LIST" + struct.pack("<I", len(info)) + info + b"\x00" + b"data" + struct.pack(
        "<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def mapped(array: np.ndarray, path: Path) -> bool:
    """Whether `array`'s memory lies in a mapping of `path` (Linux /proc/self/maps)."""
    address = array.__array_interface__["data"][0]
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path.resolve())):
            lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
            if lo <= address < hi:
                return True
    return False


@pytest.fixture
def clips(tmp_path: Path) -> list[tuple[str, Path]]:
    """Canonical WAVs (one with an extra chunk) and every hostile format of conftest, in one list."""
    folder = tmp_path / "wavs"
    hostile = accepted_wavs(folder)
    rng = np.random.default_rng(0)
    items = []
    for i, n in enumerate([1, 300, 44_100, 7_001]):
        sf.write(str(folder / f"plain{i}.wav"), rng.integers(-30_000, 30_000, n, dtype=np.int16), 44100,
                 subtype="PCM_16")
        items.append((f"plain{i}.wav", folder / f"plain{i}.wav"))
    items.append(("list.wav", with_list_chunk(folder / "list.wav", 5_000, 1)))
    return items + list(hostile.items())


def build(items: list[tuple[str, Path]], out: Path, layout: str) -> FeatureStore:
    settings = FeatureSettings(**CFG, batch_seconds=0.2, wave_store=layout)
    build_feature_store(items, out / "curated", settings, progress=False)
    return FeatureStore.open(out / "curated.wave.arrow", kind="wave")


def test_reference_store_reads_the_same_samples_as_the_copied_store(tmp_path: Path, clips: list) -> None:
    copied, referenced = build(clips, tmp_path / "copy", "copy"), build(clips, tmp_path / "ref", "reference")
    assert copied.fnames == referenced.fnames and copied.lengths.tolist() == referenced.lengths.tolist()
    in_place = 0
    for i, (name, path) in enumerate(clips):
        np.testing.assert_array_equal(referenced[i], copied[i])
        np.testing.assert_array_equal(referenced[i], load_wav(path))
        assert referenced[i].dtype == np.int16 and not referenced[i].flags.writeable
        with pytest.raises(ValueError):
            referenced[i][:1] = 0
        if mapped(referenced[i], path):
            in_place += 1
        else:  # converted: a view of the store itself
            assert mapped(referenced[i], referenced.path), name
    canonical = [n for n, p in clips if pcm16_data(p) is not None]
    assert in_place == len(canonical) == 9  # plain0-3, list, 0.05 s, 30 s, ünïcödé, silent; the rest converted
    converted = sum(2 * len(load_wav(p)) for n, p in clips if n not in canonical)
    assert referenced.path.stat().st_size < converted + 20_000 < copied.path.stat().st_size / 10
    logmels = [FeatureStore.open(tmp_path / d / "curated.logmel.arrow") for d in ("copy", "ref")]
    assert logmels[0].path.read_bytes() == logmels[1].path.read_bytes()  # the log-mel store does not change


def test_canonical_data_is_found_after_other_chunks(tmp_path: Path) -> None:
    path = with_list_chunk(tmp_path / "list.wav", 10, 2)
    assert pcm16_data(path) == (70, 10)
    sf.write(str(tmp_path / "f.wav"), np.zeros(10), 44100, subtype="FLOAT")
    sf.write(str(tmp_path / "r.wav"), np.zeros(10, np.int16), 22050, subtype="PCM_16")
    sf.write(str(tmp_path / "s.wav"), np.zeros((10, 2), np.int16), 44100, subtype="PCM_16")
    assert [pcm16_data(tmp_path / n) for n in ("f.wav", "r.wav", "s.wav")] == [None, None, None]


def test_a_changed_or_missing_wav_is_named(tmp_path: Path, clips: list) -> None:
    build(clips, tmp_path / "ref", "reference")
    store = tmp_path / "ref" / "curated.wave.arrow"
    path = clips[2][1]
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    with pytest.raises(FsdError, match="changed since the features stage") as err:
        FeatureStore.open(store)
    assert err.value.path == path
    path.unlink()
    with pytest.raises(FsdError, match="missing") as err:
        FeatureStore.open(store)
    assert err.value.path == path


def test_relative_paths_survive_moving_the_tree(tmp_path: Path, clips: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    build([(n, p.relative_to(tmp_path)) for n, p in clips], Path("data/features"), "reference")
    expected = [load_wav(p) for _, p in clips]
    shutil.move(tmp_path, tmp_path.parent / "moved")
    store = FeatureStore.open(tmp_path.parent / "moved" / "data" / "features" / "curated.wave.arrow")
    for i, wave in enumerate(expected):
        np.testing.assert_array_equal(store[i], wave)
    again = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(again[3], expected[3])


def _open_wavs(root: Path) -> list[str]:
    """Paths of the WAV files under root that this process holds open."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed between listing and reading
            continue
    return [t for t in targets if t.startswith(str(root)) and t.endswith(".wav")]


def test_held_clips_leave_no_open_files(tmp_path: Path) -> None:
    items = []
    for i in range(300):
        sf.write(str(tmp_path / f"{i}.wav"), np.full(100 + i, i, np.int16), 44100, subtype="PCM_16")
        items.append((f"{i}.wav", tmp_path / f"{i}.wav"))
    store = build(items, tmp_path / "out", "reference")
    held = [store[i] for i in range(len(store))]  # as the teacher holds every noisy clip
    # Only descriptors onto this test's WAVs count: other tests in the same worker may close theirs meanwhile.
    assert _open_wavs(tmp_path) == []
    assert all(len(w) == 100 + i and w[0] == i for i, w in enumerate(held))


def test_writer_rejects_references_in_a_copied_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="layout"):
        StoreWriter(tmp_path / "x.logmel.arrow", "logmel", np.float32, 4, layout="reference")
    with StoreWriter(tmp_path / "x.wave.arrow", "wave", np.int16, 1) as writer, pytest.raises(ValueError, match="refs"):
        writer.write(["a.wav"], [np.zeros(3, np.int16)], [None])
    with pytest.raises(FsdError, match="wave_store"):
        FeatureSettings(wave_store="link")


def test_the_features_stage_reads_wave_store_from_params(tmp_path: Path) -> None:
    root = make_root(tmp_path / "data" / "root")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["root"] = "data/root"  # relative: recorded relative to data/features
    params["features"]["wave_store"] = "reference"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run(["fsd", "features"], tmp_path)
    store = FeatureStore.open(tmp_path / "data" / "features" / "noisy.wave.arrow", kind="wave")
    assert store.metadata["layout"] == "reference"
    for i, path in enumerate(read_dataset(root).noisy.paths()):
        assert mapped(store[i], path)
        np.testing.assert_array_equal(store[i], load_wav(path))
    params["features"]["wave_store"] = "hardlink"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run(["fsd", "features"], tmp_path, check=False)
    assert proc.returncode == 1 and "features.wave_store must be copy or reference" in proc.stderr
