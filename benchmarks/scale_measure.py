"""Running one stage command as a subprocess and measuring it: wall time, peak memory of its process tree, bytes.

Memory is polled from /proc/<pid>/statm of the stage process and all its descendants (psutil) every `poll`
seconds: RSS, and anonymous RSS = RSS minus file-backed and shared pages, i.e. without the page cache of the
memory-mapped feature stores (clean pages the kernel can drop). `ru_maxrss` from wait4 is the kernel's exact
high-water mark of total RSS (file pages included) of the largest single process of the tree. CPU seconds (user +
system, from wait4) depend less than wall time on what else runs on a shared machine.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Measured:
    """What one stage cost."""

    wall_s: float
    cpu_s: float  # user + system seconds of the stage process and the children it waited for
    peak_anon: int  # bytes, polled sum over the process tree
    peak_rss: int  # bytes, polled sum over the process tree (mapped file pages included)
    maxrss: int  # bytes, wait4's ru_maxrss: the kernel's high-water mark of the largest process
    written: int  # bytes the run directory grew by
    returncode: int


def tree_bytes(path: Path) -> int:
    """Apparent size of every file under `path` (0 if absent)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # a temporary file renamed away meanwhile
                pass
    return total


def _tree_memory(root: psutil.Process) -> tuple[int, int]:
    """(anonymous RSS, RSS) summed over `root` and its descendants, in bytes."""
    anon = rss = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for proc in procs:
        try:
            info = proc.memory_info()
        except psutil.Error:
            continue
        rss += info.rss
        anon += info.rss - info.shared
    return anon, rss


def run_measured(cmd: list[str], cwd: Path, log: Path, measured_dir: Path, poll: float = 0.05,
                 env: dict[str, str] | None = None) -> Measured:
    """Run `cmd` in `cwd` (stdout and stderr to `log`), polling its tree's memory; bytes = growth of measured_dir."""
    before = tree_bytes(measured_dir)
    peak_anon = peak_rss = 0
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        root = psutil.Process(proc.pid)
        while True:
            anon, rss = _tree_memory(root)
            peak_anon, peak_rss = max(peak_anon, anon), max(peak_rss, rss)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(poll)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(wall, usage.ru_utime + usage.ru_stime, peak_anon, peak_rss, usage.ru_maxrss * 1024,
                    tree_bytes(measured_dir) - before, proc.returncode)
