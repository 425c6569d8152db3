"""Cross-validation folds over the curated set, and a fold assignment for noisy clips (leak-free pseudo labels)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import KFold

from fsdlib.dataset import Dataset
from fsdlib.errors import FsdError
from fsdlib.settings import FoldSettings


def assign_folds(labels: np.ndarray, cfg: FoldSettings) -> np.ndarray:
    """Fold index (0..n_folds-1) of each clip; each clip is in exactly one validation fold."""
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


def make_folds(dataset: Dataset, cfg: FoldSettings) -> pd.DataFrame:
    """One table (subset, fname, fold) for curated and noisy clips; noisy folds are stratified the same way.

    A dataset without a noisy part (an empty train_noisy.csv) has curated rows only.
    """
    parts = []
    for subset in (dataset.curated, dataset.noisy):
        empty_noisy = subset is dataset.noisy and len(subset) == 0
        fold = np.zeros(0, dtype=np.int64) if empty_noisy else assign_folds(subset.labels, cfg)
        parts.append(pd.DataFrame({"subset": subset.name, "fname": list(subset.fnames), "fold": fold}))
    return pd.concat(parts, ignore_index=True)
