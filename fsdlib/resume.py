"""Snapshots and resume state of a training (docs/method.md §5): an interrupted run continues exactly.

`state/<model>-fold<k>/` (outside DVC outputs) holds each finished cycle's snapshot and one `resume.pt` with the
optimiser and scheduler states, the logged history, the learning rate of every step and the out-of-fold predictions
so far. It holds only tensors, containers, numbers and strings, and is read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsdlib.atomic import atomic_path, save_torch
from fsdlib.batches import FoldData
from fsdlib.errors import FsdError
from fsdlib.spec import ModelSpec

log = logging.getLogger(__name__)
RESUME = "resume.pt"
PACKAGE = Path(__file__).resolve().parent  # the library's sources: a state written by other code is stale


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, streamed (memory stays small for multi-GB feature stores)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def store_digest(store: Any) -> str:
    """The digest of a feature store's file, or of each file of a chain of stores (fsdlib/distill.py)."""
    paths = store.paths if hasattr(store, "paths") else (store.path,)
    return "+".join(file_digest(p) for p in paths)


@functools.cache
def code_digest(package: Path = PACKAGE) -> str:
    """sha256 over the paths and bytes of a package's Python sources."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _array_digest(array: np.ndarray | None) -> str | None:
    return None if array is None else hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def fingerprint(spec: ModelSpec, data: FoldData, name: str, fold: int, init: Path | None) -> str:
    """What a resume state must match: the settings, the fold split, the stores' contents, every target, the
    initial weights and the library's code (a run killed before `dvc exp run -S ...` or a code change starts over).

    Hashing the stores reads them once per training start, a few seconds per GB: small beside training on them.
    """
    parts = [asdict(spec), name, fold, data.train_idx.tolist(), data.val_idx.tolist(), store_digest(data.curated),
             None if data.noisy is None else store_digest(data.noisy), _array_digest(data.curated_targets),
             None if init is None else file_digest(init), _array_digest(data.spl_targets),
             _array_digest(data.noisy_targets), _array_digest(data.spl_noisy_idx), _array_digest(data.truth),
             code_digest()]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def snapshot_path(state_dir: Path, cycle: int) -> Path:
    """Where cycle `cycle` (1-based)'s weights are kept until the fold is finished."""
    return state_dir / f"snapshot_{cycle}.pt"


def save_cycle(model: torch.nn.Module, state: ResumeState, state_dir: Path, out_dir: Path, fingerprint: str) -> None:
    """A finished cycle: its weights, then the resume state that refers to them, then the weights as an output."""
    save_torch(model.state_dict(), snapshot_path(state_dir, state.cycle))
    state.save(state_dir, fingerprint)
    publish_snapshot(state_dir, out_dir, state.cycle)


def publish_snapshot(state_dir: Path, out_dir: Path, cycle: int) -> None:
    """Copy a cycle's snapshot from the state dir to the outputs, atomically."""
    snapshot = snapshot_path(state_dir, cycle)
    with atomic_path(out_dir / snapshot.name) as tmp:
        shutil.copyfile(snapshot, tmp)


def load_init_weights(model: torch.nn.Module, path: Path) -> None:
    """Start from another model's snapshot (init_from); the architectures must match but for the noisy head."""
    if not path.is_file():
        raise FsdError("init_from snapshot not found (train that model first)", path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a layer of another shape
        raise FsdError(f"init_from snapshot does not fit this architecture ({' '.join(str(exc).split())[:200]})",
                      path) from None
    missing = [k for k in missing if not k.startswith("heads.noisy.")]  # a head may be added or dropped
    unexpected = [k for k in unexpected if not k.startswith("heads.noisy.")]
    if missing or unexpected:
        raise FsdError(f"init_from snapshot does not fit this architecture (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]})", path)


@dataclass(frozen=True)
class BestEpoch:
    """The validated epoch with the highest lwlrap (the first, on ties) and its predictions of the held-out clips."""

    epoch: int
    lwlrap: float
    preds: np.ndarray


@dataclass
class ResumeState:
    """Everything after cycle `cycle` that an uninterrupted run would still hold in memory."""

    cycle: int  # finished cycles
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    history: list[dict[str, float]]  # one logged row per epoch
    oof: list[np.ndarray]  # validation predictions, one (n_val, C) array per finished cycle
    lr_steps: list[float]  # the learning rate of every optimiser step
    best: BestEpoch | None = None  # the best validated epoch so far

    def save(self, state_dir: Path, fingerprint: str) -> None:
        """Write resume.pt (after the cycle's snapshot, which it refers to)."""
        best = None if self.best is None else {"epoch": self.best.epoch, "lwlrap": self.best.lwlrap,
                                               "preds": torch.from_numpy(self.best.preds)}
        save_torch({"fingerprint": fingerprint, "cycle": self.cycle, "optimizer": self.optimizer,
                    "scheduler": self.scheduler, "history": self.history,
                    "oof": [torch.from_numpy(p) for p in self.oof],
                    "lr_steps": torch.tensor(self.lr_steps, dtype=torch.float64), "best": best}, state_dir / RESUME)

    @classmethod
    def load(cls, state_dir: Path, fingerprint: str) -> ResumeState | None:
        """The state in `state_dir` if it is readable, matches `fingerprint` and its snapshot exists; else None."""
        path = state_dir / RESUME
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged or foreign state is not fatal: start over
            log.warning("%s: ignoring unreadable resume state (%s)", path, exc)
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
            log.info("%s: settings, data or code changed since the resume state was written; starting over", path)
            return None
        try:
            best = state.get("best")
            loaded = cls(int(state["cycle"]), state["optimizer"], state["scheduler"], state["history"],
                         [t.numpy() for t in state["oof"]], state["lr_steps"].tolist(),
                         None if best is None else BestEpoch(int(best["epoch"]), float(best["lwlrap"]),
                                                             best["preds"].numpy()))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            log.warning("%s: ignoring a resume state of another layout (%r); starting over", path, exc)
            return None
        if not snapshot_path(state_dir, loaded.cycle).is_file():
            log.warning("%s: its snapshot is missing; starting over", path)
            return None
        return loaded
