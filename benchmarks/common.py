"""What the benchmark scripts share: realistic temporary stores, the models they time, and timing."""

from __future__ import annotations

import ctypes
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fsdlib.spec import ModelSpec
from fsdlib.store import FeatureStore, StoreWriter

N_CLASSES = 80
N_MELS = 128
SAMPLE_RATE = 44_100
FRAMES_PER_SECOND = SAMPLE_RATE / 347  # hop 347: about 127 frames per second

# models.A of params.yaml (the demo ResNet) and the paper's ResNet34 (docs/method.md §4, §7: crop 512, batch 64).
DEMO_RESNET = ModelSpec(
    family="resnet", crop=128, batch=32,
    arch={"layers": [1, 1, 1, 1], "widths": [16, 32, 64, 128], "hidden": 128},
    augment={"mixup": True, "gain": True, "freq_mask": True, "additional_crop": False},
)
PAPER_RESNET = ModelSpec(family="resnet", crop=512, batch=64)
# models.D of params.yaml (the demo EnvNet-v2) and the paper's model D (crop 133,300, batch 64).
WAVE_AUGMENT = {"mixup": True, "time_scale": True, "gain": True}
DEMO_ENVNET = ModelSpec(family="envnet", crop=44_100, batch=32, optimizer="sgd", lr_max=0.1,
                        arch={"width": 0.25, "hidden": 128}, augment=WAVE_AUGMENT)
PAPER_ENVNET = ModelSpec(family="envnet", crop=133_300, batch=64, optimizer="sgd", lr_max=0.1, augment=WAVE_AUGMENT)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning every block over 32 MB to the system.

    By default each large tensor (a batch's activations) is a fresh mmap, page-faulted in on every call, which
    costs much of a forward pass on this VM. Raising M_MMAP_THRESHOLD and M_TRIM_THRESHOLD to 1 GiB stops it.
    Returns whether it took effect (glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def machine() -> str:
    """One line naming the machine the figures come from."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")


def durations(n: int, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    """Clip durations in seconds, log-uniform in [low, high] (FSDKaggle2019: 0.3-30 s, mostly short)."""
    return np.exp(rng.uniform(np.log(low), np.log(high), n))


def logmel_clips(seconds: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Power log-mels (frames, 128) of the given durations, about 127 frames per second."""
    frames = np.maximum(1, np.round(seconds * FRAMES_PER_SECOND).astype(int))
    return [rng.standard_exponential((f, N_MELS), dtype=np.float32) for f in frames]


def wave_clips(seconds: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """int16 waveforms of the given durations at 44.1 kHz."""
    samples = np.maximum(1, np.round(seconds * SAMPLE_RATE).astype(int))
    return [rng.integers(-3000, 3000, s, dtype=np.int16) for s in samples]


def write_store(path: Path, kind: str, clips: list[np.ndarray], per_batch: int = 64) -> FeatureStore:
    """Write clips to a store file as the features stage does (several record batches) and memory-map it."""
    dtype, inner = (np.float32, N_MELS) if kind == "logmel" else (np.int16, 1)
    with StoreWriter(path, kind, dtype, inner) as writer:
        for start in range(0, len(clips), per_batch):
            part = clips[start : start + per_batch]
            writer.write([f"{start + i:07d}.wav" for i in range(len(part))], part)
    return FeatureStore.open(path, kind)


def multi_hot(n: int, rng: np.random.Generator) -> np.ndarray:
    """Targets with one to three true labels per clip."""
    targets = np.zeros((n, N_CLASSES), dtype=np.float32)
    for row in targets:
        row[rng.choice(N_CLASSES, size=rng.integers(1, 4), replace=False)] = 1.0
    return targets


def timed(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Seconds per call of fn: `warmup` untimed calls, then the fastest of `repeats` timed ones. The fastest, as
    timeit advises: slower calls were slowed by other processes taking the cores, not by the code."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def background_load(seconds: float = 1.0) -> float:
    """Share of all cores busy with other work over `seconds` (from /proc/stat; NaN where unavailable).

    Figures measured while other processes keep the cores busy are slower and much noisier: torch's
    OpenMP threads wait for each other at every parallel region when one of them is descheduled."""
    def ticks() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = ticks()
        time.sleep(seconds)
        total1, idle1 = ticks()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def header(title: str) -> str:
    """The first lines of a benchmark's output: what, where, and how busy the machine was."""
    return f"{title}\nmachine: {machine()}\nbackground load before the run: {background_load():.0%} of all cores\n"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A plain-text table with right-aligned columns (the first left-aligned)."""
    cells = [headers] + [[f"{c:,.1f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                     strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
