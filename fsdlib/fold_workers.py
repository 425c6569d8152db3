"""A model's folds trained at once, in worker processes placed on the hardware (docs/method.md §14).

Each worker is a fresh (spawned) process that trains one fold with `train_fold` on its slot's device and thread
count, so a fold's weights are bit for bit those of training it alone with that thread count. Resume state stays
per fold: after a kill, a rerun continues every fold from its last finished cycle.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

import torch

from fsdlib.distributed import launched_as_group
from fsdlib.errors import FsdError
from fsdlib.fold_data import fold_data, init_snapshot
from fsdlib.heap import bound_kernel_cache, keep_freed_memory
from fsdlib.inference import InferenceConfig
from fsdlib.paths import PATHS, Paths
from fsdlib.placement import Placement, Slot, host_cores, plan_slots
from fsdlib.progress import progress_bar
from fsdlib.spec import ModelSpec
from fsdlib.train import TrainResult, train_fold

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class FoldJob:
    """One (model, fold) to train: everything a worker needs, all of it picklable (stores open in the worker)."""

    spec: ModelSpec
    name: str
    fold: int
    inference: InferenceConfig
    paths: Paths = PATHS


def train_job(job: FoldJob, device: str, progress: bool) -> TrainResult:
    """Train one fold in this process: its data, its init snapshot (`init_from`), its output and state dirs."""
    data, n_classes = fold_data(job.spec, job.fold, job.paths)
    return train_fold(job.spec, data, n_classes, job.paths.fold_dir(job.name, job.fold),
                      job.paths.state_dir(job.name, job.fold), name=job.name, fold=job.fold,
                      init_weights=init_snapshot(job.spec, job.fold, job.paths), device=device,
                      inference=job.inference, progress=progress)


def train_model(jobs: Sequence[FoldJob], placement: Placement, device: str, progress: bool = True) -> list[TrainResult]:
    """Train a model's folds where `placement` puts them (`plan_slots`); under torchrun every rank trains each fold
    together, the folds one after another (one fold over several GPUs, docs/method.md §5)."""
    if launched_as_group():
        return [train_job(job, device, progress) for job in jobs]
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return train_folds(jobs, plan_slots(len(jobs), placement, device, host_cores(), n_gpus), progress)


def train_folds(jobs: Sequence[FoldJob], slots: Sequence[Slot], progress: bool = True) -> list[TrainResult]:
    """Train every job, at most one per slot at a time, in job order; the results in job order.

    One slot: in this process (no worker start-up), with the slot's thread count. Several: spawned workers, each
    fold's progress in the log (one line per cycle) and one bar over the folds. A failed fold stops the others
    (each keeps its resume state) and raises FsdError naming it.
    """
    if not slots:
        raise FsdError("no worker slots to train on")
    if len(slots) == 1:
        _use_threads(slots[0])
        return [train_job(job, slots[0].device, progress) for job in jobs]
    label = f"{jobs[0].name}: {len(jobs)} folds on {len(slots)} workers" if jobs else "no folds"
    with progress_bar(label, len(jobs), enabled=progress) as advance:
        _run_workers(jobs, slots, advance)
    return [_finished(job) for job in jobs]


def _run_workers(jobs: Sequence[FoldJob], slots: Sequence[Slot], advance: Callable[[], None]) -> None:
    """Start a worker per job as slots free up; wait for all, or stop all at the first failure."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited thread pools or CUDA state
    pending, free = list(jobs), list(slots)
    running: dict[int, tuple[mp.process.BaseProcess, FoldJob, Slot]] = {}
    try:
        while pending or running:
            while pending and free:
                job, slot = pending.pop(0), free.pop(0)
                worker = ctx.Process(target=_worker, args=(job, slot, os.getpid()), name=f"{job.name}-fold{job.fold}")
                with _thread_environment(slot.threads):
                    worker.start()
                running[worker.sentinel] = (worker, job, slot)
                log.info("%s fold %d: started on %s (%d thread%s)", job.name, job.fold, slot.device, slot.threads,
                         "" if slot.threads == 1 else "s")
            for sentinel in wait(list(running)):
                worker, job, slot = running.pop(sentinel)  # type: ignore[index]
                worker.join()
                if worker.exitcode != 0:
                    raise FsdError(f"training {job.name} fold {job.fold} failed (worker exit code {worker.exitcode}; "
                                   "its error is printed above); finished cycles of every fold resume on a rerun")
                free.append(slot)
                advance()
    finally:
        for worker, _, _ in running.values():
            worker.terminate()
            worker.join()


def _worker(job: FoldJob, slot: Slot, parent: int) -> None:
    """A worker process's body: as a stage would run, one fold, errors as one line and an exit code."""
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s {job.name}-fold{job.fold}: %(message)s",
                        force=True)
    die_with_parent()
    if os.getppid() != parent:  # the stage died before the line above took effect
        raise SystemExit(1)
    keep_freed_memory()
    bound_kernel_cache()
    _use_threads(slot)
    try:
        result = train_job(job, slot.device, progress=False)
    except FsdError as exc:
        print(f"error: {job.name} fold {job.fold}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    log.info("validation lwlrap per cycle %s", [round(v, 4) for v in result.cycle_lwlrap])


def die_with_parent() -> None:
    """Have Linux kill this worker when the stage process dies (even by SIGKILL), so no orphan goes on writing
    a fold's state after its stage is gone; elsewhere a no-op."""
    try:
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _use_threads(slot: Slot) -> None:
    """The slot's torch threads (on a GPU, for the host-side work: the cores divided among the workers)."""
    torch.set_num_threads(slot.threads)


@contextmanager
def _thread_environment(threads: int) -> Iterator[None]:
    """The thread-count variables a spawned worker's libraries read at import, set while it starts."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _finished(job: FoldJob) -> TrainResult:
    """A worker's result, read back from the metrics.json it wrote."""
    out_dir = job.paths.fold_dir(job.name, job.fold)
    path = out_dir / "metrics.json"
    try:
        cycles = json.loads(Path(path).read_text(encoding="utf-8"))["cycle_lwlrap"]
    except (OSError, ValueError, KeyError) as exc:
        raise FsdError(f"training {job.name} fold {job.fold} left no readable metrics ({exc})", path) from None
    return TrainResult([float(v) for v in cycles], out_dir)
