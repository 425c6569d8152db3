"""A model's predictions over its trained folds, read from and written to the pipeline's layout.

Test and out-of-fold (OOF) predictions feed the ensemble (docs/method.md §8); the teacher's predictions on the
noisy clips become the soft pseudo labels (docs/method.md §6).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fsdlib.atomic import atomic_path
from fsdlib.dataset import read_label_table
from fsdlib.errors import FsdError
from fsdlib.fold_data import curated_folds, open_subset
from fsdlib.inference import InferenceConfig
from fsdlib.paths import PATHS, Paths
from fsdlib.predict import predict_snapshot_sets, predict_snapshots, snapshot_paths
from fsdlib.pseudo import VARIANTS, label_frame, soft_labels
from fsdlib.spec import ModelSpec

log = logging.getLogger(__name__)


def model_predictions(name: str, spec: ModelSpec, folds: Sequence[int], cfg: InferenceConfig, device: str = "auto",
                      paths: Paths = PATHS) -> dict[str, np.ndarray]:
    """Test predictions averaged over the folds, and each fold's predictions of its held-out curated clips (OOF).

    Every snapshot is loaded once for both clip sets; OOF rows of folds not listed stay NaN.
    """
    classes, labels = read_label_table(paths.labels)
    test, _ = open_subset("test", spec.kind, labels, paths.features)
    curated, _ = open_subset("curated", spec.kind, labels, paths.features)
    assignment = curated_folds(curated, paths)
    test_clips = [test[i] for i in range(len(test))]
    test_sum = np.zeros((len(test), len(classes)))
    oof = np.full((len(curated), len(classes)), np.nan, dtype=np.float32)
    for k in folds:
        snapshots = snapshot_paths(paths.fold_dir(name, k), spec.snapshot_cycles)
        held_out = np.flatnonzero(assignment == k)
        log.info("%s fold %d: %d snapshots × pads %s", name, k, len(snapshots), list(spec.tta_pads) or [0])
        oof[held_out], test_fold = predict_snapshot_sets(spec, len(classes), snapshots,
                                                         [[curated[int(i)] for i in held_out], test_clips],
                                                         spec.tta_pads, cfg, device)
        test_sum += test_fold
    return {"test_fnames": np.array(test.fnames), "test": (test_sum / len(folds)).astype(np.float32),
            "curated_fnames": np.array(curated.fnames), "oof": oof, "classes": np.array(classes)}


def teacher_predictions(name: str, spec: ModelSpec, folds: Sequence[int], device: str = "auto",
                        paths: Paths = PATHS) -> dict[str, np.ndarray]:
    """Every noisy clip predicted at full length by each teacher fold (mean over all its snapshots)."""
    classes, labels = read_label_table(paths.labels)
    noisy, _ = open_subset("noisy", spec.kind, labels, paths.features)
    clips = [noisy[i] for i in range(len(noisy))]
    preds = []
    for k in folds:
        snapshots = snapshot_paths(paths.fold_dir(name, k))
        log.info("teacher %s fold %d: %d snapshots on %d noisy clips", name, k, len(snapshots), len(clips))
        preds.append(predict_snapshots(spec, len(classes), snapshots, clips, device=device))
    return {"fnames": np.array(noisy.fnames), "folds": np.array(folds), "preds": np.stack(preds),
            "classes": np.array(classes)}


def pseudo_label_tables(teacher: Path, temperature: float) -> dict[str, pd.DataFrame]:
    """The teacher's predictions sharpened at `temperature` into the soft labels of each variant."""
    if not teacher.is_file():
        raise FsdError("teacher predictions not found (run the teacher stage)", teacher)
    with np.load(teacher) as z:
        fnames, folds, preds, classes = list(z["fnames"]), z["folds"].tolist(), z["preds"], list(z["classes"])
    fold_preds = dict(zip(folds, preds, strict=True))
    return {variant: label_frame(soft_labels(fold_preds, variant, temperature), fnames, classes, variant, temperature)
            for variant in VARIANTS}


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save named arrays as an uncompressed .npz, atomically, in the dict's order."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)


def load_predictions(models: Sequence[str], paths: Paths = PATHS) -> dict[str, dict[str, np.ndarray]]:
    """Each model's predictions file, checked for the same clips and classes as the first one."""
    out = {}
    for name in models:
        path = paths.predictions_of(name)
        if not path.is_file():
            raise FsdError(f"predictions of model {name} not found (run predict@{name})", path)
        with np.load(path) as z:
            out[name] = {k: z[k] for k in z.files}
        first = out[models[0]]
        for key in ("test_fnames", "curated_fnames", "classes"):
            if not np.array_equal(out[name][key], first[key]):
                raise FsdError(f"{key} differ from those of model {models[0]}; rerun predict", path)
    return out
