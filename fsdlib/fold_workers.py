"""A model's folds trained at once, in worker processes placed on the hardware (docs/method.md §14).

One worker process per slot lives for the whole stage and trains one fold after another with `train_fold` on its
slot's device and thread count, so a fold's weights are bit for bit those of training it alone with that thread
count. On the CPU a worker is a fork of the stage (torch already imported); on GPUs a fresh (spawned) process.
Resume state stays per fold: after a kill, a rerun continues every fold from its last finished cycle.
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
from multiprocessing.connection import Connection, wait
from pathlib import Path

import torch

from fsdlib.distributed import launched_as_group
from fsdlib.errors import FsdError
from fsdlib.fold_data import fold_data, init_snapshot
from fsdlib.heap import bound_kernel_cache, keep_freed_memory
from fsdlib.paths import PATHS, Paths
from fsdlib.placement import Placement, Slot, host_cores, plan_slots
from fsdlib.progress import progress_bar
from fsdlib.settings import InferenceConfig
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

    One slot: in this process (no worker start-up), with the slot's thread count. Several: one worker process per
    slot for the whole stage, each taking the next fold when it finishes one; each fold's progress in the log (one
    line per cycle) and one bar over the folds. A failed fold stops the others (each keeps its resume state) and
    raises FsdError naming it.
    """
    if not slots:
        raise FsdError("no worker slots to train on")
    if len(slots) == 1:
        _use_threads(slots[0])
        return [train_job(job, slots[0].device, progress) for job in jobs]
    label = f"{jobs[0].name}: {len(jobs)} folds on {len(slots)} workers" if jobs else "no folds"
    workers = _start_workers(slots[: len(jobs)])  # before the bar's thread starts: a fork copies only this one
    try:
        with progress_bar(label, len(jobs), enabled=progress) as advance:
            _deal_jobs(jobs, workers, advance)
    finally:
        for worker, _, _ in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    return [_finished(job) for job in jobs]


Worker = tuple[mp.process.BaseProcess, Connection, Slot]


def worker_context(slots: Sequence[Slot]) -> mp.context.BaseContext:
    """Forked workers on the CPU: a copy of this process, torch already imported, so a worker starts in
    milliseconds instead of the seconds a fresh interpreter takes; spawned ones (fresh interpreters) for GPUs,
    whose CUDA state a fork must not inherit, or where fork does not exist."""
    if all(slot.device == "cpu" for slot in slots) and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    return mp.get_context("spawn")


def _start_workers(slots: Sequence[Slot]) -> list[Worker]:
    """One worker process per slot, each waiting for folds on its end of a pipe."""
    ctx, workers = worker_context(slots), []
    for i, slot in enumerate(slots):
        mine, theirs = ctx.Pipe()
        worker = ctx.Process(target=_worker, args=(theirs, slot, os.getpid()), name=f"fold-worker-{i}")
        with _thread_environment(slot.threads):
            worker.start()
        theirs.close()
        workers.append((worker, mine, slot))
    return workers


def _deal_jobs(jobs: Sequence[FoldJob], workers: Sequence[Worker], advance: Callable[[], None]) -> None:
    """Give each idle worker the next job until none is left; wait for all, or stop at the first failure."""
    pending = list(jobs)
    running: dict[Connection, FoldJob] = {}
    idle = [conn for _, conn, _ in workers]
    by_conn = {conn: (worker, slot) for worker, conn, slot in workers}
    sentinels = {worker.sentinel: conn for worker, conn, _ in workers}
    while pending or running:
        while pending and idle:
            conn, job = idle.pop(0), pending.pop(0)
            conn.send(job)
            running[conn] = job
            log.info("%s fold %d: started on %s (%d thread%s)", job.name, job.fold, by_conn[conn][1].device,
                     by_conn[conn][1].threads, "" if by_conn[conn][1].threads == 1 else "s")
        for ready in wait(list(running) + [s for s, c in sentinels.items() if c in running]):
            conn = sentinels.get(ready, ready)  # a pipe with a message, or a worker that exited
            if conn not in running:
                continue
            job = running[conn]
            if ready is conn and _received(conn):
                del running[conn]
                idle.append(conn)
                advance()
                continue
            worker = by_conn[conn][0]
            worker.join()
            raise FsdError(f"training {job.name} fold {job.fold} failed (worker exit code {worker.exitcode}; "
                           "its error is printed above); finished cycles of every fold resume on a rerun")
    for conn in idle:
        conn.send(None)


def _received(conn: Connection) -> bool:
    """Whether the worker reported its fold done (False: it closed the pipe, i.e. it died)."""
    try:
        return conn.recv() == "done"
    except EOFError:
        return False


def _worker(conn: Connection, slot: Slot, parent: int) -> None:
    """A worker process's body: folds from the pipe until None, each trained as a stage would train it; an error
    ends the worker with one line and an exit code."""
    die_with_parent()
    if os.getppid() != parent:  # the stage died before the line above took effect
        raise SystemExit(1)
    keep_freed_memory()
    bound_kernel_cache()
    _use_threads(slot)
    while (job := conn.recv()) is not None:
        logging.basicConfig(level=logging.INFO, format=f"%(levelname)s {job.name}-fold{job.fold}: %(message)s",
                            force=True)
        try:
            result = train_job(job, slot.device, progress=False)
        except FsdError as exc:
            print(f"error: {job.name} fold {job.fold}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        log.info("validation lwlrap per cycle %s", [round(v, 4) for v in result.cycle_lwlrap])
        conn.send("done")


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
