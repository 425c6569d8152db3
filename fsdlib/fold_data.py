"""Data assembly from the pipeline's outputs: feature stores with their targets, and each clip's fold.

Training, prediction and the teacher all open stores here, so one check ties each store's clip order to the label table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fsdlib.batches import FoldData
from fsdlib.dataset import Labels, read_label_table
from fsdlib.errors import FsdError
from fsdlib.paths import PATHS, Paths
from fsdlib.predict import snapshot_paths
from fsdlib.pseudo import labels_for_fold
from fsdlib.spec import ModelSpec
from fsdlib.store import FeatureStore


def open_subset(subset: str, kind: str, labels: dict[str, Labels], features: Path) -> tuple[FeatureStore, np.ndarray]:
    """A subset's feature store and its targets, checked to be in the same clip order."""
    store = FeatureStore.open(features / f"{subset}.{kind}.arrow")
    if tuple(store.fnames) != labels[subset].fnames:
        raise FsdError(f"clip order differs from {features / 'labels.parquet'}; rerun the features stage", store.path)
    return store, labels[subset].targets


def fold_assignment(table: pd.DataFrame, subset: str, fnames: list[str], source: Path) -> np.ndarray:
    """The fold of each clip of a subset, in the store's order."""
    rows = table[table["subset"] == subset]
    fold_of = dict(zip(rows["fname"], rows["fold"], strict=True))
    missing = [f for f in fnames if f not in fold_of]
    if missing:
        raise FsdError(f"{subset} clip {missing[0]!r} has no fold; rerun the folds stage", source)
    return np.array([fold_of[f] for f in fnames])


def curated_folds(store: FeatureStore, paths: Paths = PATHS) -> np.ndarray:
    """The fold of each curated clip, in the store's order."""
    return fold_assignment(pd.read_parquet(paths.folds), "curated", store.fnames, paths.folds)


def fold_data(spec: ModelSpec, fold: int, paths: Paths = PATHS) -> tuple[FoldData, int]:
    """Stores, targets and the fold split of one (model, fold); also returns the number of classes."""
    classes, labels = read_label_table(paths.labels)
    curated, curated_targets = open_subset("curated", spec.kind, labels, paths.features)
    table = pd.read_parquet(paths.folds)
    assignment = fold_assignment(table, "curated", curated.fnames, paths.folds)
    if fold not in set(assignment.tolist()):
        raise FsdError(f"fold {fold} does not exist (folds are {sorted(set(assignment.tolist()))})", paths.folds)
    data = FoldData(curated, curated_targets, np.flatnonzero(assignment != fold), np.flatnonzero(assignment == fold))
    if spec.multitask or spec.spl:
        noisy, noisy_targets = open_subset("noisy", spec.kind, labels, paths.features)
        if len(noisy):  # without a noisy part the noisy head and the SPL batches go unused (docs/method.md §12)
            data.noisy, data.noisy_targets = noisy, noisy_targets
    if spec.spl and data.noisy is not None:
        source = paths.pseudo_labels(spec.spl_variant)
        if not source.is_file():
            raise FsdError("pseudo labels not found (run the pseudo_label stage)", source)
        data.spl_targets = labels_for_fold(pd.read_parquet(source), fold, data.noisy.fnames, classes, str(source))
        data.spl_noisy_idx = np.flatnonzero(fold_assignment(table, "noisy", data.noisy.fnames, paths.folds) != fold)
    return data, len(classes)


def init_snapshot(spec: ModelSpec, fold: int, paths: Paths = PATHS) -> Path | None:
    """The same-fold final snapshot of the model `spec` starts from (`init_from`), or None."""
    return snapshot_paths(paths.fold_dir(spec.init_from, fold))[-1] if spec.init_from else None
