"""Atomic outputs: write to a temporary sibling, then rename, so an interrupted stage leaves nothing half-written."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _new_temporary(path: Path) -> Path:
    """A new empty file beside `path`, created as any new file is (0666 less the umask, not mkstemp's 0600)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path next to `path`; rename it over `path` only if the block succeeds. An existing
    file's mode is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temporary(path)
    try:
        yield tmp_path
        if path.exists():
            tmp_path.chmod(path.stat().st_mode & 0o7777)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_torch(obj: Any, path: str | Path) -> None:
    """torch.save atomically, through a file object so that the archive does not embed the temporary name."""
    import torch  # late: the other atomic writers are torch-free

    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)


def write_json(path: str | Path, obj: Any) -> None:
    """Write a JSON file atomically, indented and with a trailing newline."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
