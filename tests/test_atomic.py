"""Atomic outputs (fsdlib/atomic.py): a file appears whole or not at all, with the mode a file written in place gets."""

import os
from pathlib import Path

import pytest
import torch

from fsdlib.atomic import atomic_path, save_torch, write_text


def test_a_new_file_gets_the_umask_mode_and_an_old_one_keeps_its_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "new.txt", "a")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o666 & ~0o022  # not mkstemp's 0600
        script = tmp_path / "run.sh"
        script.write_text("old")
        script.chmod(0o755)
        write_text(script, "new")
        assert script.read_text() == "new" and script.stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(umask)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_save_torch_writes_what_torch_load_reads(tmp_path: Path) -> None:
    save_torch({"w": torch.arange(3)}, tmp_path / "x.pt")
    assert torch.equal(torch.load(tmp_path / "x.pt", weights_only=True)["w"], torch.arange(3))
