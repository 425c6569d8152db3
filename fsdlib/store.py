"""Feature stores: one uncompressed Arrow IPC file per subset and kind, memory-mapped and read zero-copy.

A record per clip: `fname` and `data`, a large_list of float32 (log-mel, time-major frames x n_mels, flattened)
or int16 (waveform). Schema metadata key `fsdlib` holds JSON: kind, dtype, inner_dim and the writer's extras.
A waveform store of layout `reference` (metadata `"layout": "reference"`) also has the columns `source`, `offset`,
`samples` and `file_bytes`: a clip whose `source` is not empty is read from that WAV in place (fsdlib/wave_ref.py),
its `data` left empty; the others (WAVs that needed converting) hold their samples in `data`.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from fsdlib.atomic import atomic_path
from fsdlib.errors import FsdError
from fsdlib.settings import WAVE_STORES  # copy | reference (waveform stores only)
from fsdlib.wave_ref import WaveRef, check_ref, map_samples, recorded_path, resolved

FORMAT_VERSION = 1
KINDS = {"logmel": np.dtype(np.float32), "wave": np.dtype(np.int16)}
_META_KEY = b"fsdlib"
_REF_FIELDS = (("source", pa.string()), ("offset", pa.int64()), ("samples", pa.int64()), ("file_bytes", pa.int64()))


def _schema(dtype: np.dtype, meta: dict[str, Any]) -> pa.Schema:
    """The store schema, the same for writer and reader checks."""
    fields = [pa.field("fname", pa.string(), nullable=False),
              pa.field("data", pa.large_list(pa.from_numpy_dtype(dtype)), nullable=False)]
    if meta.get("layout") == "reference":
        fields += [pa.field(name, kind, nullable=False) for name, kind in _REF_FIELDS]
    return pa.schema(fields, metadata={_META_KEY: json.dumps(meta).encode()})


class StoreWriter:
    """Streaming writer: `with StoreWriter(...) as w: w.write(fnames, arrays)`; the file appears only on success.

    With layout "reference" (waveforms), `w.write(fnames, arrays, refs)` records clip i as `refs[i]` where that is
    not None, and its samples `arrays[i]` otherwise.
    """

    def __init__(self, path: Path, kind: str, dtype: Any, inner_dim: int, metadata: dict | None = None,
                 layout: str = "copy") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown store kind {kind!r}; expected one of {sorted(KINDS)}")
        if layout not in WAVE_STORES or (layout == "reference" and kind != "wave"):
            raise ValueError(f"layout {layout!r} for a {kind} store; expected copy, or reference for waveforms")
        self.path = Path(path)
        self.kind = kind
        self.dtype = np.dtype(dtype)
        self.inner_dim = int(inner_dim)
        self.layout = layout
        meta = {"format_version": FORMAT_VERSION, "kind": kind, "dtype": self.dtype.name,
                "inner_dim": self.inner_dim, **(metadata or {}), **({"layout": layout} if layout != "copy" else {})}
        self.schema = _schema(self.dtype, meta)
        self._stack: ExitStack | None = None
        self._writer: ipc.RecordBatchFileWriter | None = None

    def __enter__(self) -> StoreWriter:
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            sink = stack.enter_context(pa.OSFile(str(tmp), "wb"))
            self._writer = stack.enter_context(ipc.new_file(sink, self.schema))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> bool:
        stack, self._stack, self._writer = self._stack, None, None
        return bool(stack.__exit__(*exc)) if stack is not None else False

    def write(self, fnames: list[str], arrays: list[np.ndarray], refs: list[WaveRef | None] | None = None) -> None:
        """Append one record batch: clip `fnames[i]` holds `arrays[i]` ((frames, inner_dim), or 1-D if inner_dim 1),
        or, in a reference store, is read from `refs[i]` when that is not None."""
        if self._writer is None:
            raise RuntimeError("StoreWriter.write outside its with-block")
        if len(fnames) != len(arrays) or (refs is not None and len(refs) != len(fnames)):
            raise ValueError(f"{len(fnames)} fnames but {len(arrays)} arrays and {len(refs or [])} refs")
        if refs is not None and self.layout != "reference":
            raise ValueError("refs given to a store of layout copy")
        if not fnames:
            return
        if self.layout == "reference":
            refs = refs or [None] * len(fnames)
            arrays = [a if r is None else a[:0] for a, r in zip(arrays, refs, strict=True)]
        for name, a in zip(fnames, arrays, strict=True):
            if a.size % self.inner_dim or (a.ndim == 2 and a.shape[1] != self.inner_dim) or a.ndim > 2:
                raise ValueError(f"{name}: array of shape {a.shape} does not fit inner_dim {self.inner_dim}")
        sizes = np.fromiter((a.size for a in arrays), np.int64, len(arrays))
        offsets = np.zeros(len(arrays) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        flat = np.concatenate([np.ravel(a) for a in arrays]).astype(self.dtype, copy=False)
        data = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat))
        columns = [pa.array(fnames, pa.string()), data]
        if refs is not None:
            here = self.path.parent
            columns += [pa.array(["" if r is None else recorded_path(r.path, here) for r in refs], pa.string()),
                        *[pa.array([0 if r is None else getattr(r, name) for r in refs], pa.int64())
                          for name in ("offset", "samples", "file_bytes")]]
        self._writer.write_batch(pa.record_batch(columns, schema=self.schema))


class FeatureStore:
    """A memory-mapped store; `store[i]` is a read-only zero-copy view: (frames, n_mels) float32 or (samples,) int16."""

    def __init__(self, path: Path, meta: dict[str, Any], fnames: list[str], values: list[np.ndarray],
                 batch_of: np.ndarray, starts: np.ndarray, stops: np.ndarray,
                 refs: list[WaveRef | None] | None = None) -> None:
        self.path = path
        self.metadata = meta
        self.kind: str = meta["kind"]
        self.inner_dim: int = int(meta["inner_dim"])
        self.fnames = fnames
        self.index = {f: i for i, f in enumerate(fnames)}
        self.lengths = (stops - starts) // self.inner_dim
        self._refs = refs  # per clip: where its samples lie (reference layout), None when they are in the store
        if refs is not None:
            self.lengths = np.array([n if r is None else r.samples for n, r in zip(self.lengths, refs, strict=True)],
                                    np.int64)
        self._values = values
        # plain lists: indexing them is several times cheaper than indexing numpy arrays with Python ints
        self._batch_of = batch_of.tolist()
        self._starts = starts.tolist()
        self._stops = stops.tolist()
        self._shape = (-1, self.inner_dim) if self.inner_dim > 1 else (-1,)

    @classmethod
    def open(cls, path: Path, kind: str | None = None) -> FeatureStore:
        """Memory-map a store and check it; FsdError naming the file if missing, damaged or of another kind."""
        path = Path(path)
        if not path.is_file():
            raise FsdError("feature store not found (run the features stage)", path)
        try:
            reader = ipc.open_file(pa.memory_map(str(path), "r"))
            meta = cls._check_schema(reader.schema, path)
            batches = [reader.get_batch(b) for b in range(reader.num_record_batches)]
        except FsdError:
            raise
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise FsdError(f"damaged feature store ({exc})", path) from None
        if kind is not None and meta["kind"] != kind:
            raise FsdError(f"feature store holds {meta['kind']!r} features, expected {kind!r}", path)
        inner = int(meta["inner_dim"])
        fnames: list[str] = []
        values, batch_of, starts, stops = [], [], [], []
        refs: list[WaveRef | None] | None = [] if meta.get("layout") == "reference" else None
        for b, batch in enumerate(batches):
            if refs is not None:
                refs.extend(cls._refs_of(batch, path))
            data = batch.column(1)
            try:
                flat = data.values.to_numpy(zero_copy_only=True)
                offsets = data.offsets.to_numpy(zero_copy_only=True)
                names = batch.column(0).to_pylist()
            except (pa.ArrowException, ValueError) as exc:
                raise FsdError(f"damaged feature store, record batch {b} ({exc})", path) from None
            sizes = np.diff(offsets)
            if (data.null_count or batch.column(0).null_count or len(offsets) != len(names) + 1
                    or (len(offsets) and (offsets[0] < 0 or offsets[-1] > len(flat)))
                    or np.any(sizes < 0) or np.any(sizes % inner)):
                raise FsdError(f"damaged feature store, record batch {b} (inconsistent offsets)", path)
            fnames.extend(names)
            values.append(flat)
            batch_of.append(np.full(len(names), b, np.int64))
            starts.append(offsets[:-1])
            stops.append(offsets[1:])
        if len(set(fnames)) != len(fnames):
            raise FsdError("feature store holds a clip name twice", path)

        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

        return cls(path, meta, fnames, values, cat(batch_of), cat(starts), cat(stops), refs)

    @staticmethod
    def _refs_of(batch: pa.RecordBatch, path: Path) -> list[WaveRef | None]:
        """The references of one record batch, each checked against its WAV (FsdError naming a changed one)."""
        source, offset, samples, size = (batch.column(name).to_pylist() for name, _ in _REF_FIELDS)
        out: list[WaveRef | None] = []
        for s, o, n, b in zip(source, offset, samples, size, strict=True):
            if not s:
                out.append(None)
                continue
            ref = WaveRef(resolved(s, path.parent), o, n, b)
            check_ref(ref, path)
            out.append(ref)
        return out

    @staticmethod
    def _check_schema(schema: pa.Schema, path: Path) -> dict[str, Any]:
        """Parse and validate the schema and its metadata against the format written by StoreWriter."""
        raw = (schema.metadata or {}).get(_META_KEY)
        if raw is None:
            raise FsdError("not an fsdlib feature store (no fsdlib metadata in the Arrow schema)", path)
        try:
            meta = json.loads(raw)
        except ValueError:
            raise FsdError("damaged feature store (unreadable metadata)", path) from None
        if not isinstance(meta, dict) or meta.get("kind") not in KINDS or not isinstance(meta.get("inner_dim"), int):
            raise FsdError(f"damaged feature store (bad metadata {meta!r})", path)
        if meta.get("format_version") != FORMAT_VERSION:
            raise FsdError(f"feature store format {meta.get('format_version')}, this code reads "
                           f"{FORMAT_VERSION} (rerun the features stage)", path)
        expected = _schema(KINDS[meta["kind"]], meta)
        if (not schema.equals(expected, check_metadata=False) or meta["inner_dim"] < 1
                or meta.get("layout", "copy") not in WAVE_STORES):
            raise FsdError(f"feature store has an unexpected schema: {schema.to_string(show_schema_metadata=False)}",
                           path)
        return meta

    def __len__(self) -> int:
        return len(self.fnames)

    def __reduce__(self) -> tuple:
        """Pickle as "reopen this file" (e.g. for spawned loader workers), never as a copy of the mapped data."""
        return FeatureStore.open, (self.path, self.kind)

    def __getitem__(self, i: int) -> np.ndarray:
        """Clip i as a read-only view into the memory map (no copy): of the store, or of its WAV (reference layout)."""
        if self._refs is not None and (ref := self._refs[i]) is not None:
            return map_samples(ref)
        return self._values[self._batch_of[i]][self._starts[i] : self._stops[i]].reshape(self._shape)

    def get(self, fname: str) -> np.ndarray:
        """Clip by file name."""
        try:
            i = self.index[fname]
        except KeyError:
            raise KeyError(f"{fname} not in feature store {self.path}") from None
        return self[i]
