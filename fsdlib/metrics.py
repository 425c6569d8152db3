"""lwlrap: label-weighted label-ranking average precision, the FSDKaggle2019 metric, vectorised.

Definition: for each (clip, true label) pair, the precision of the clip's ranked scores cut at that label
(the share of true labels among the labels ranked at or above it); lwlrap is the mean over all pairs, and
per-class lwlrap is the mean over that class's pairs (the overall figure weights classes by positive count).

Ties: a label tied with a true label counts as ranked above it (pessimistic, as scikit-learn's
label_ranking_average_precision_score). Clips without true labels contribute nothing.
"""

from __future__ import annotations

import numpy as np


def _pair_precisions(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(n, C) array: precision at each true label's rank; 0 where the label is not true.

    Only the (clip, true label) pairs are ranked: each is compared with its clip's scores.
    """
    rows, labels = np.nonzero(truth)
    pair_scores = scores[rows, labels][:, None]
    at_or_above = scores[rows] >= pair_scores  # (pairs, C): labels ranked at or above the pair's label
    rank = at_or_above.sum(axis=1)
    hits = (at_or_above & truth[rows]).sum(axis=1)
    out = np.zeros(truth.shape, dtype=np.float64)
    out[rows, labels] = hits / rank
    return out


def _check(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth) > 0.5
    scores = np.asarray(scores, dtype=np.float64)
    if truth.shape != scores.shape or truth.ndim != 2:
        raise ValueError(f"truth {truth.shape} and scores {scores.shape} must be equal 2-D shapes")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf")
    return truth, scores


def lwlrap_per_class(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class lwlrap (NaN for classes without positives) and each class's weight (share of positives)."""
    truth, scores = _check(truth, scores)
    prec = _pair_precisions(truth, scores)
    n_pos = truth.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = prec.sum(axis=0) / n_pos
    per_class[n_pos == 0] = np.nan
    total = n_pos.sum()
    weights = n_pos / total if total else np.zeros_like(n_pos, dtype=np.float64)
    return per_class, weights


def lwlrap(truth: np.ndarray, scores: np.ndarray) -> float:
    """Overall lwlrap: mean precision over all (clip, true label) pairs."""
    truth, scores = _check(truth, scores)
    n_pairs = truth.sum()
    if n_pairs == 0:
        raise ValueError("no true labels: lwlrap is undefined")
    return float(_pair_precisions(truth, scores).sum() / n_pairs)
