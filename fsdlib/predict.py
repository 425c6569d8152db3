"""Predictions of a trained model's fold snapshots, per snapshot and pad or averaged (docs/method.md §7, §8)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fsdlib.device import resolve_device
from fsdlib.errors import FsdError
from fsdlib.inference import predict_clips
from fsdlib.models import TaggingModel, build_network
from fsdlib.settings import InferenceConfig
from fsdlib.spec import ModelSpec

_SNAPSHOT = re.compile(r"snapshot_(\d+)\.pt$")


def snapshot_cycle(path: Path) -> int:
    """The cycle (1-based) a snapshot file was saved after."""
    match = _SNAPSHOT.search(path.name)
    if match is None:
        raise FsdError("not a snapshot file (snapshot_<cycle>.pt)", path)
    return int(match.group(1))


def snapshot_paths(fold_dir: Path, cycles: Sequence[int] | None = None) -> list[Path]:
    """A fold's snapshot files in cycle order; `cycles` (1-based) selects some, None keeps all."""
    found = {int(m.group(1)): p for p in fold_dir.glob("snapshot_*.pt") if (m := _SNAPSHOT.search(p.name))}
    if not found:
        raise FsdError("no snapshots (train this model first)", fold_dir)
    if cycles is None:
        return [found[c] for c in sorted(found)]
    missing = [c for c in cycles if c not in found]
    if missing:
        raise FsdError(f"snapshot cycle(s) {missing} not trained (have {sorted(found)})", fold_dir)
    return [found[c] for c in cycles]


def load_snapshot(spec: ModelSpec, n_classes: int, path: Path, device: str = "auto") -> TaggingModel:
    """Build the spec's network and load a snapshot into it, in eval mode."""
    model = build_network(spec, n_classes)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as exc:
        detail = " ".join(str(exc).split())[:200]  # one line
        raise FsdError(f"snapshot does not load into this model's architecture ({detail})", path) from None
    return model.to(resolve_device(device)).eval()


def predict_snapshots(
    spec: ModelSpec,
    n_classes: int,
    paths: Sequence[Path],
    clips: Sequence[np.ndarray],
    pads: Sequence[int],
    cfg: InferenceConfig,
    device: str = "auto",
) -> np.ndarray:
    """Mean over snapshots of the padding-TTA prediction of every clip: (n_clips, n_classes)."""
    total: np.ndarray | None = None
    for path in paths:
        model = load_snapshot(spec, n_classes, path, device)
        p = predict_clips(model, clips, spec.kind, spec.activation, pads, spec.pad_mode, cfg, device)
        total = p.astype(np.float64) if total is None else total + p
    if total is None:
        raise FsdError("no snapshots to predict with")
    return (total / len(paths)).astype(np.float32)


def predict_snapshot_grid(
    spec: ModelSpec,
    n_classes: int,
    paths: Sequence[Path],
    clip_sets: Sequence[Sequence[np.ndarray]],
    pads: Sequence[int],
    cfg: InferenceConfig,
    device: str = "auto",
) -> list[np.ndarray]:
    """Every snapshot's prediction at every pad, kept apart so that they can be chosen later (docs/method.md §11).

    One (n_snapshots, n_pads, n_clips, n_classes) array per clip set; each snapshot is loaded and folded for
    inference once, and each set is grouped by length on its own.
    """
    pads = list(pads) or [0]
    grids = [np.empty((len(paths), len(pads), len(clips), n_classes), dtype=np.float32) for clips in clip_sets]
    for s, path in enumerate(paths):
        model = load_snapshot(spec, n_classes, path, device).for_inference()
        for grid, clips in zip(grids, clip_sets, strict=True):
            for j, pad in enumerate(pads):
                grid[s, j] = predict_clips(model, clips, spec.kind, spec.activation, (pad,), spec.pad_mode, cfg, device)
    return grids
