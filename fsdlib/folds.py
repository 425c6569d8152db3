"""Cross-validation folds over the curated set, and a fold assignment for noisy clips (leak-free pseudo labels)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import KFold

from fsdlib.dataset import Dataset
from fsdlib.errors import FsdError

FoldMethod = Literal["multilabel_stratified", "kfold"]
METHODS = ("multilabel_stratified", "kfold")


@dataclass(frozen=True)
class FoldConfig:
    n_folds: int = 5
    seed: int = 0
    method: FoldMethod = "multilabel_stratified"


def assign_folds(labels: np.ndarray, cfg: FoldConfig) -> np.ndarray:
    """Fold index (0..n_folds-1) of each clip; each clip is in exactly one validation fold."""
    if cfg.method not in METHODS:
        raise FsdError(f"folds.method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.n_folds < 2:
        raise FsdError(f"folds.n_folds must be at least 2, got {cfg.n_folds}")
    n = len(labels)
    if n < cfg.n_folds:
        raise FsdError(f"cannot split {n} clips into {cfg.n_folds} folds")
    if cfg.method == "kfold":
        splitter = KFold(n_splits=cfg.n_folds, shuffle=True, random_state=cfg.seed)
    else:
        splitter = MultilabelStratifiedKFold(n_splits=cfg.n_folds, shuffle=True, random_state=cfg.seed)
    fold = np.full(n, -1, dtype=np.int64)
    for k, (_, val) in enumerate(splitter.split(np.zeros((n, 1)), labels)):
        fold[val] = k
    return fold


def make_folds(dataset: Dataset, cfg: FoldConfig) -> pd.DataFrame:
    """One table (subset, fname, fold) for curated and noisy clips; noisy folds are stratified the same way.

    A dataset without a noisy part (an empty train_noisy.csv) has curated rows only.
    """
    parts = []
    for subset in (dataset.curated, dataset.noisy):
        empty_noisy = subset is dataset.noisy and len(subset) == 0
        fold = np.zeros(0, dtype=np.int64) if empty_noisy else assign_folds(subset.labels, cfg)
        parts.append(pd.DataFrame({"subset": subset.name, "fname": list(subset.fnames), "fold": fold}))
    return pd.concat(parts, ignore_index=True)
