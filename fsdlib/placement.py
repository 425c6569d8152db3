"""Where a model's folds train at once (docs/method.md §14): worker slots on the CPU cores or the GPUs.

Torch-free policy, so that it is cheap to test: the caller says how many cores and GPUs there are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fsdlib.errors import FsdError


@dataclass(frozen=True)
class Slot:
    """One worker: the device its fold trains on and the torch threads it may use on the host."""

    device: str  # "cpu" or "cuda:N"
    threads: int


@dataclass(frozen=True)
class Placement:
    """The `placement` params: one-thread CPU workers by default; `gpu_workers` folds sharing each GPU."""

    cpu_threads: int = 1
    gpu_workers: int = 5

    def __post_init__(self) -> None:
        if not (isinstance(self.cpu_threads, int) and self.cpu_threads > 0):
            raise FsdError(f"cpu_threads must be a positive integer, got {self.cpu_threads!r}")
        if not (isinstance(self.gpu_workers, int) and self.gpu_workers > 0):
            raise FsdError(f"gpu_workers must be a positive integer, got {self.gpu_workers!r}")


def host_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_slots(n_folds: int, placement: Placement, device: str, cores: int, n_gpus: int) -> list[Slot]:
    """The worker slots for `n_folds` folds.

    - CPU: cores / cpu_threads workers of cpu_threads threads each (workers x threads = cores), so that no two
      workers contend for a core; the thread count is the same as training the folds one after another with it.
    - `cuda:N`: gpu_workers workers share that GPU.
    - `cuda` or `auto` with GPUs: gpu_workers per GPU, folds dealt out round-robin, so that with several GPUs each
      fold gets a GPU of its own before any GPU gets a second.
    Host threads of GPU workers: the cores divided among them. Never more slots than folds.
    """
    if n_folds < 1:
        raise FsdError("no folds to train (folds.ids is empty)")
    if device == "cpu" or (device == "auto" and n_gpus == 0):
        workers = max(1, min(n_folds, cores // placement.cpu_threads))
        return [Slot("cpu", placement.cpu_threads)] * workers
    if device.startswith("cuda:"):
        gpus = [device]
    elif device in ("cuda", "auto"):
        if n_gpus == 0:
            raise FsdError(f"device {device!r} requested but CUDA is not available (use --device auto or cpu)")
        gpus = [f"cuda:{i}" for i in range(n_gpus)]
    else:
        raise FsdError(f"unknown device {device!r} (auto, cpu, cuda or cuda:N)")
    count = min(n_folds, len(gpus) * placement.gpu_workers)
    threads = max(1, cores // count)
    return [Slot(gpus[i % len(gpus)], threads) for i in range(count)]
