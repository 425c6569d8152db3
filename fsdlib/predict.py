"""Predictions of a trained model: its fold snapshots averaged over snapshots × pads (docs/method.md §7, §8)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fsdlib.device import resolve_device
from fsdlib.errors import FsdError
from fsdlib.inference import InferenceConfig, predict_clips
from fsdlib.models import TaggingModel
from fsdlib.spec import ModelSpec

_SNAPSHOT = re.compile(r"snapshot_(\d+)\.pt$")


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
    model = spec.build(n_classes)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as exc:
        raise FsdError(f"snapshot does not load into this model's architecture ({str(exc)[:200]})", path) from None
    return model.to(resolve_device(device)).eval()


def predict_snapshots(
    spec: ModelSpec,
    n_classes: int,
    paths: Sequence[Path],
    clips: Sequence[np.ndarray],
    pads: Sequence[int] = (),
    cfg: InferenceConfig = InferenceConfig(),
    device: str = "auto",
) -> np.ndarray:
    """Mean over snapshots of the padding-TTA prediction of every clip: (n_clips, n_classes)."""
    return predict_snapshot_sets(spec, n_classes, paths, [clips], pads, cfg, device)[0]


def predict_snapshot_sets(
    spec: ModelSpec,
    n_classes: int,
    paths: Sequence[Path],
    clip_sets: Sequence[Sequence[np.ndarray]],
    pads: Sequence[int] = (),
    cfg: InferenceConfig = InferenceConfig(),
    device: str = "auto",
) -> list[np.ndarray]:
    """`predict_snapshots` for several clip sets, each snapshot loaded once; every set is grouped on its own."""
    totals: list[np.ndarray | None] = [None] * len(clip_sets)
    for path in paths:
        model = load_snapshot(spec, n_classes, path, device)
        for i, clips in enumerate(clip_sets):
            p = predict_clips(model, clips, spec.kind, spec.activation, pads, spec.pad_mode, cfg, device)
            totals[i] = p.astype(np.float64) if totals[i] is None else totals[i] + p
    return [(total / len(paths)).astype(np.float32) for total in totals]
