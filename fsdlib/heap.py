"""Giving freed heap memory back to the system when a process holds too much of it (docs/method.md §8).

The stages ask glibc to keep freed blocks (`keep_freed_memory`: faster repeated batches), so a
long run of inference batches of different sizes can leave gigabytes free but resident; `trim_above` returns them.
What is still in use cannot be returned: `bound_kernel_cache` keeps oneDNN's per-shape kernels from holding it.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

# oneDNN (torch's CPU convolutions) caches a compiled kernel per input shape, 1,024 by default, each holding
# buffers sized by its input: inference over clips of many lengths kept 2.5 GiB alive that way (the demo EnvNet on
# 1/16 of FSDKaggle2019's test and held-out clips), which no trim can return. A few entries keep every training
# step's kernels (fixed crop shapes) and cost nothing measurable (docs/results.md, Full FSDKaggle2019).
KERNEL_CACHE_ENTRIES = 8


def anon_bytes() -> int:
    """Resident anonymous memory of this process (Linux `RssAnon`: the heap, not mapped files); 0 where unknown."""
    try:
        return int(Path("/proc/self/status").read_text().split("RssAnon:")[1].split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        return 0


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks up to 1 GiB instead of unmapping every one over 32 MB.

    Large activations are then not page-faulted in afresh on every forward pass: EnvNet inference runs
    1.3-1.9x faster on the CPU (benchmarks/README.md). A no-op where glibc is absent.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def bound_kernel_cache(entries: int = KERNEL_CACHE_ENTRIES) -> None:
    """Cap oneDNN's kernel cache at `entries` unless the user set ONEDNN_PRIMITIVE_CACHE_CAPACITY; takes effect if
    called before the first convolution of the process."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(entries))


def trim_above(limit: int) -> bool:
    """Return freed heap memory to the system (malloc_trim) if this process holds more than `limit` bytes of
    anonymous memory; whether it did."""
    trim = _malloc_trim()
    if trim is None or anon_bytes() <= limit:
        return False
    trim(0)
    return True
