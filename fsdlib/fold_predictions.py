"""A model's predictions over its trained folds, read from and written to the pipeline's layout.

Test and out-of-fold (OOF) predictions per snapshot cycle and TTA pad feed the ensemble, which chooses among them
(docs/method.md §8, §11); the teacher's predictions on the noisy clips become the soft pseudo labels (§6).
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
from fsdlib.paths import PATHS, Paths
from fsdlib.predict import predict_snapshot_grid, predict_snapshots, snapshot_cycle, snapshot_paths
from fsdlib.pseudo import VARIANTS, label_frame, soft_labels
from fsdlib.settings import InferenceConfig
from fsdlib.spec import ModelSpec

log = logging.getLogger(__name__)


def model_predictions(name: str, spec: ModelSpec, folds: Sequence[int], cfg: InferenceConfig, device: str = "auto",
                      paths: Paths = PATHS) -> dict[str, np.ndarray]:
    """Per (snapshot cycle, TTA pad): test predictions averaged over the folds, and each fold's predictions of its
    held-out curated clips (OOF), so that the ensemble can choose cycles and pads (docs/method.md §11).

    `oof` is (cycles, pads, curated clips, C), its rows of folds not listed NaN; `test` is (cycles, pads, test clips,
    C). The cycles are the spec's snapshot_cycles (all when unset), the pads its tta_pads (pad 0 when empty).
    A model validated every epoch (`validate_every`) adds `best_oof` (curated clips, C): each fold's predictions at
    its best epoch, as training recorded them (no pad), and `best_epochs` per listed fold.
    """
    classes, labels = read_label_table(paths.labels)
    test, _ = open_subset("test", spec.kind, labels, paths.features)
    curated, _ = open_subset("curated", spec.kind, labels, paths.features)
    assignment = curated_folds(curated, paths)
    cycles = spec.snapshot_cycles or tuple(range(1, spec.cycles + 1))
    pads = spec.pads
    test_clips = [test[i] for i in range(len(test))]
    test_sum = np.zeros((len(cycles), len(pads), len(test), len(classes)))
    oof = np.full((len(cycles), len(pads), len(curated), len(classes)), np.nan, dtype=np.float32)
    for k in folds:
        snapshots = snapshot_paths(paths.fold_dir(name, k), cycles)
        held_out = np.flatnonzero(assignment == k)
        log.info("%s fold %d: cycles %s × pads %s", name, k, list(cycles), list(pads))
        oof[:, :, held_out], test_fold = predict_snapshot_grid(spec, len(classes), snapshots,
                                                               [[curated[int(i)] for i in held_out], test_clips],
                                                               pads, cfg, device)
        test_sum += test_fold
    out = {"test_fnames": np.array(test.fnames), "test": (test_sum / len(folds)).astype(np.float32),
           "curated_fnames": np.array(curated.fnames), "curated_folds": assignment, "oof": oof,
           "cycles": np.array(cycles), "pads": np.array(pads), "classes": np.array(classes)}
    if spec.validate_every == "epoch":
        out |= best_epoch_oof(name, folds, list(curated.fnames), len(classes), paths)
    return out


def best_epoch_oof(name: str, folds: Sequence[int], fnames: list[str], n_classes: int,
                   paths: Paths = PATHS) -> dict[str, np.ndarray]:
    """Each fold's best-epoch predictions of its held-out clips (from its oof.npz), placed by clip name."""
    row = {f: i for i, f in enumerate(fnames)}
    best = np.full((len(fnames), n_classes), np.nan, dtype=np.float32)
    epochs = []
    for k in folds:
        path = paths.fold_dir(name, k) / "oof.npz"
        with np.load(path) as z:
            if "best_preds" not in z.files:
                raise FsdError("no best-epoch predictions (trained before validate_every: epoch? rerun train)", path)
            best[[row[str(f)] for f in z["fnames"]]] = z["best_preds"]
            epochs.append(int(z["best_epoch"]))
    return {"best_oof": best, "best_epochs": np.array(epochs)}


def teacher_predictions(name: str, spec: ModelSpec, folds: Sequence[int], cfg: InferenceConfig, device: str = "auto",
                        paths: Paths = PATHS, cycles: dict[int, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """Every noisy clip predicted at full length by each teacher fold, the mean over its snapshots.

    `cycles` maps a fold to the snapshot cycles it averages (docs/method.md §11); a fold absent from it, or
    cycles None, averages all of them. `cycles_used` records the choice, one row per fold, one column per cycle.
    """
    classes, labels = read_label_table(paths.labels)
    noisy, _ = open_subset("noisy", spec.kind, labels, paths.features)
    clips = [noisy[i] for i in range(len(noisy))]
    cycles = cycles or {}
    preds, used = [], []
    for k in folds:
        snapshots = snapshot_paths(paths.fold_dir(name, k), cycles.get(k))
        used.append([snapshot_cycle(path) for path in snapshots])
        log.info("teacher %s fold %d: cycles %s on %d noisy clips", name, k, used[-1], len(clips))
        # without a noisy part the pseudo labels are an empty table, and the students train on curated clips only
        preds.append(predict_snapshots(spec, len(classes), snapshots, clips, (), cfg, device) if clips else
                     np.zeros((0, len(classes)), np.float32))
    used_mask = np.zeros((len(folds), max(max(u) for u in used)), dtype=bool)
    for row, chosen in enumerate(used):
        used_mask[row, np.array(chosen) - 1] = True
    return {"fnames": np.array(noisy.fnames), "folds": np.array(folds), "preds": np.stack(preds),
            "cycles_used": used_mask, "classes": np.array(classes)}


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
    """Each model's predictions file (per cycle and pad), checked for the same clips, folds and classes as the first."""
    out = {}
    for name in models:
        path = paths.predictions_of(name)
        if not path.is_file():
            raise FsdError(f"predictions of model {name} not found (run predict@{name})", path)
        with np.load(path) as z:
            out[name] = {k: z[k] for k in z.files}
        if "cycles" not in out[name] or out[name]["oof"].ndim != 4:
            raise FsdError("predictions without per-cycle and per-pad arrays (an older layout); rerun predict", path)
        first = out[models[0]]
        for key in ("test_fnames", "curated_fnames", "curated_folds", "classes"):
            if not np.array_equal(out[name][key], first[key]):
                raise FsdError(f"{key} differ from those of model {models[0]}; rerun predict", path)
    return out
