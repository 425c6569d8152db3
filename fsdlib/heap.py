"""Giving freed heap memory back to the system when a process holds too much of it (docs/method.md §8).

The stages ask glibc to keep freed blocks (stages/common.py `keep_freed_memory`: faster repeated batches), so a
long run of inference batches of different sizes can leave gigabytes free but resident; `trim_above` returns them.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path


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


def trim_above(limit: int) -> bool:
    """Return freed heap memory to the system (malloc_trim) if this process holds more than `limit` bytes of
    anonymous memory; whether it did."""
    trim = _malloc_trim()
    if trim is None or anon_bytes() <= limit:
        return False
    trim(0)
    return True
