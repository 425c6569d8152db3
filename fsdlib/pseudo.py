"""Soft pseudo labels for noisy clips (docs/method.md §6): teacher predictions, sharpened, in two variants.

`all_folds` (the paper's) averages the teacher's fold models, so every student fold sees labels that
carry knowledge of its own validation clips; `leak_free` gives student fold k the labels of teacher fold k
only (that teacher never trained on fold k's curated clips), which keeps the student's CV honest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fsdlib.errors import FsdError

VARIANTS = ("all_folds", "leak_free")
ALL_FOLDS = -1  # student_fold value of rows shared by every student fold


def sharpen(p: np.ndarray, temperature: float) -> np.ndarray:
    """Rows q_i = p_i^T / sum_j p_j^T (MixMatch's sharpening with temperature 1/T): a distribution per clip."""
    if temperature <= 0:
        raise FsdError(f"spl.temperature must be positive, got {temperature}")
    powered = np.power(np.clip(np.asarray(p, dtype=np.float64), 0.0, None), temperature)
    total = powered.sum(axis=1, keepdims=True)
    uniform = np.full_like(powered, 1.0 / powered.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, powered / total, uniform).astype(np.float32)


def soft_labels(fold_preds: Mapping[int, np.ndarray], variant: str, temperature: float) -> dict[int, np.ndarray]:
    """Soft labels per student fold from each teacher fold's (n_noisy, C) prediction (snapshot-averaged)."""
    if variant not in VARIANTS:
        raise FsdError(f"spl variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if not fold_preds:
        raise FsdError("no teacher predictions")
    if variant == "all_folds":
        shared = sharpen(np.mean([fold_preds[k] for k in sorted(fold_preds)], axis=0), temperature)
        return {ALL_FOLDS: shared}
    return {k: sharpen(p, temperature) for k, p in sorted(fold_preds.items())}


def label_frame(labels: Mapping[int, np.ndarray], fnames: Sequence[str], classes: Sequence[str], variant: str,
                temperature: float) -> pd.DataFrame:
    """The soft labels as one table: variant, temperature, student_fold, fname, one column per class."""
    parts = []
    for fold, q in labels.items():
        part = pd.DataFrame(q, columns=list(classes))
        part.insert(0, "fname", list(fnames))
        part.insert(0, "student_fold", fold)
        part.insert(0, "temperature", float(temperature))
        part.insert(0, "variant", variant)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def labels_for_fold(table: pd.DataFrame, fold: int, fnames: Sequence[str], classes: Sequence[str],
                    source: str) -> np.ndarray:
    """The (n_noisy, C) soft labels a student fold trains with, aligned with the noisy store's order."""
    rows = table[(table["student_fold"] == ALL_FOLDS) | (table["student_fold"] == fold)]
    if rows.empty:
        raise FsdError(f"no pseudo labels for student fold {fold}", source)
    rows = rows.set_index("fname")
    missing = [f for f in fnames if f not in rows.index]
    if missing:
        raise FsdError(f"no pseudo label for noisy clip {missing[0]!r}; rerun pseudo_label", source)
    if list(rows.columns[3:]) != list(classes):
        raise FsdError("pseudo-label classes differ from the feature store's", source)
    return rows.loc[list(fnames), list(classes)].to_numpy(np.float32)
