"""Feature store: round trip, zero-copy read-only views, and clear errors for damaged or foreign files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from fsdlib.errors import FsdError
from fsdlib.store import FeatureStore, StoreWriter


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges where this process has `path` memory-mapped (Linux /proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path.resolve())):
            lo, hi = line.split()[0].split("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def write_logmel(path: Path, n_frames: list[int], n_mels: int = 8, per_batch: int = 2) -> list[np.ndarray]:
    """A log-mel store with clips of the given frame counts, written in several record batches."""
    rng = np.random.default_rng(0)
    arrays = [rng.random((n, n_mels), dtype=np.float32) for n in n_frames]
    names = [f"clip{i}.wav" for i in range(len(arrays))]
    with StoreWriter(path, "logmel", np.float32, n_mels, {"config": {"n_mels": n_mels}}) as writer:
        for i in range(0, len(arrays), per_batch):
            writer.write(names[i : i + per_batch], arrays[i : i + per_batch])
    return arrays


def test_logmel_round_trip_across_batches(tmp_path: Path) -> None:
    path = tmp_path / "curated.logmel.arrow"
    arrays = write_logmel(path, [3, 0, 1, 50, 7])
    store = FeatureStore.open(path, kind="logmel")
    assert len(store) == 5
    assert store.fnames == [f"clip{i}.wav" for i in range(5)]
    assert store.index["clip3.wav"] == 3
    assert store.lengths.tolist() == [3, 0, 1, 50, 7]
    assert store.kind == "logmel" and store.inner_dim == 8
    assert store.metadata["config"] == {"n_mels": 8}
    for i, expected in enumerate(arrays):
        got = store[i]
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(store.get("clip4.wav"), arrays[4])
    np.testing.assert_array_equal(store[-1], arrays[-1])
    with pytest.raises(KeyError, match="nope.wav"):
        store.get("nope.wav")
    with pytest.raises(IndexError):
        store[5]


def test_wave_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "noisy.wave.arrow"
    waves = [np.array([1], np.int16), np.arange(-300, 300, dtype=np.int16), np.zeros(0, np.int16)]
    with StoreWriter(path, "wave", np.int16, 1, {"sample_rate": 44100}) as writer:
        writer.write(["a.wav", "b.wav", "c.wav"], waves)
    store = FeatureStore.open(path)
    assert store.kind == "wave" and store.metadata["sample_rate"] == 44100
    assert store.lengths.tolist() == [1, 600, 0]
    for i, expected in enumerate(waves):
        assert store[i].dtype == np.int16 and store[i].shape == expected.shape
        np.testing.assert_array_equal(store[i], expected)


def test_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.wave.arrow"
    with StoreWriter(path, "wave", np.int16, 1):
        pass
    store = FeatureStore.open(path)
    assert len(store) == 0 and store.lengths.shape == (0,)


def test_items_are_read_only_views_into_the_memory_map(tmp_path: Path) -> None:
    path = tmp_path / "curated.logmel.arrow"
    write_logmel(path, [4, 9, 2])
    store = FeatureStore.open(path)
    ranges = mapped_ranges(path)
    assert ranges, "the store file is not memory-mapped"
    for i in range(len(store)):
        item = store[i]
        assert not item.flags.writeable
        assert item.base is not None and not item.flags.owndata
        address = item.__array_interface__["data"][0]
        assert any(lo <= address < hi for lo, hi in ranges), "item is a copy, not a view of the mapped file"
        with pytest.raises(ValueError):
            item[0, 0] = 1.0


def test_pickles_as_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "curated.logmel.arrow"
    arrays = write_logmel(path, [400, 300])
    payload = pickle.dumps(FeatureStore.open(path))
    assert len(payload) < 2000  # the path, not the 700 frames
    np.testing.assert_array_equal(pickle.loads(payload)[1], arrays[1])


def test_interrupted_writer_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "curated.logmel.arrow"
    with pytest.raises(RuntimeError, match="boom"):
        with StoreWriter(path, "logmel", np.float32, 4) as writer:
            writer.write(["a.wav"], [np.ones((2, 4), np.float32)])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_arrays_of_the_wrong_shape(tmp_path: Path) -> None:
    with StoreWriter(tmp_path / "x.logmel.arrow", "logmel", np.float32, 4) as writer:
        with pytest.raises(ValueError, match="inner_dim"):
            writer.write(["a.wav"], [np.ones((2, 3), np.float32)])
        with pytest.raises(ValueError, match="fnames"):
            writer.write(["a.wav", "b.wav"], [np.ones((2, 4), np.float32)])
    with pytest.raises(ValueError, match="kind"):
        StoreWriter(tmp_path / "y.arrow", "spectrum", np.float32, 4)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FsdError, match="not found") as err:
        FeatureStore.open(tmp_path / "absent.logmel.arrow")
    assert err.value.path == tmp_path / "absent.logmel.arrow"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_file(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "curated.logmel.arrow"
    write_logmel(path, [30, 20, 10])
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) - 100], "garbage": b"\x00not arrow" * 50, "empty": b""}[damage])
    with pytest.raises(FsdError) as err:
        FeatureStore.open(path)
    assert err.value.path == path


def test_wrong_kind(tmp_path: Path) -> None:
    path = tmp_path / "curated.logmel.arrow"
    write_logmel(path, [3])
    with pytest.raises(FsdError, match="expected 'wave'"):
        FeatureStore.open(path, kind="wave")


def test_foreign_arrow_file(tmp_path: Path) -> None:
    path = tmp_path / "foreign.arrow"
    table = pa.table({"fname": ["a.wav"], "data": [[1.0, 2.0]]})
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(FsdError, match="not an fsdlib feature store"):
        FeatureStore.open(path)
