"""Reading a weights-only `torch.save` file into numpy arrays without importing torch.

The file is a zip archive: `<name>/data.pkl` holds the structure (dicts, lists, strings, numbers) with each tensor
as a reference to a raw storage `<name>/data/<key>` plus its offset, shape and strides. The unpickler below admits
exactly what `torch.load(weights_only=True)` admits for plain data (dicts, OrderedDicts and tensors of the common
dtypes), refuses any other class, and rebuilds every tensor as a numpy array. The torch-free tagger
(fsdlib/lite.py) starts in a fraction of the time `import torch` takes.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fsdlib.errors import FsdError

_DTYPES = {  # torch storage class -> numpy dtype
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16, "LongStorage": np.int64,
    "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """What the pickle names as a tensor's storage class: only its numpy dtype matters here."""

    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_DTYPES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
    """A tensor from its storage (a flat array), element offset, shape and element strides: a copy that owns its
    memory, in C order."""
    if not size:
        return storage[offset].copy()
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride), writeable=False)
    return np.ascontiguousarray(view)


class _Unpickler(pickle.Unpickler):
    """Plain data and tensors only; storages are read from the archive on demand."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data or a tensor of a supported dtype")

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage reference {pid!r}")
        raw = self.archive.read(f"{self.prefix}data/{key}")
        return np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"), count=numel)


def read_weights_file(path: str | Path) -> Any:
    """The contents of a weights-only `torch.save` file, tensors as numpy arrays (FsdError naming the file if it
    is not one, is damaged, or holds anything else)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise FsdError("not a torch.save zip archive (no data.pkl)", path)
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
                raise FsdError("big-endian tensors are not supported", path)
            return _Unpickler(archive.read(pickles[0]), archive, prefix).load()
    except FsdError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError, OSError) as exc:
        raise FsdError(f"not a loadable tagger file ({' '.join(str(exc).split())[:200]})", path) from None
