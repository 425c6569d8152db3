"""Weighted averaging of model predictions, and ensemble weights fitted on out-of-fold (OOF) predictions.

The paper's fixed weights (A:B:C:D:E:F = 3:4:3:1:1:1) sit beside weights fitted here (docs/method.md §9.4).
Fitting the weights (or choosing snapshots, §11) on the OOF predictions and reporting lwlrap on those same
predictions is optimistic: the choice has seen the clips it is scored on. `nested_cv` makes every choice for
fold k on the other folds only and scores it on fold k, an honest estimate beside the test set's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsdlib.errors import FsdError
from fsdlib.metrics import lwlrap
from fsdlib.selection import SnapshotGrid, average, fold_selections

DEFAULT_STEPS = 60
_STEP_SIZES = (0.25, 0.1, 0.05, 0.02)


@dataclass(frozen=True)
class Ensemble:
    """Each model's predictions and both ensembles' (keys "ensemble_fixed", "ensemble_fitted", after the models)."""

    fixed: dict[str, float]  # the weights as given, a model with weight 0 reported but not averaged
    fitted: dict[str, float]  # fitted on the OOF predictions of the models with a positive fixed weight
    known: np.ndarray  # curated clips whose fold every model trained: the OOF rows kept
    oof: dict[str, np.ndarray]
    test: dict[str, np.ndarray]


def fit_candidates(fixed: dict[str, float], fit_over: str) -> list[str]:
    """The models the fitted weights may use: those with a positive fixed weight ("weighted"), or every model
    predicted, the weight-0 ones included ("all")."""
    return [m for m in fixed if fit_over == "all" or fixed[m] > 0]


def combine(oof: dict[str, np.ndarray], test: dict[str, np.ndarray], fixed: dict[str, float],
            truth: np.ndarray, fit_over: str = "weighted") -> Ensemble:
    """Both ensembles of the models in `fixed`: the fixed weights, and weights fitted on the OOF predictions.

    OOF rows of folds some model did not train (NaN) are dropped before fitting and scoring.
    """
    known = np.all([np.isfinite(oof[m]).all(axis=1) for m in fixed], axis=0)
    oof = {m: oof[m][known] for m in fixed}
    fitted = fit_weights({m: oof[m] for m in fit_candidates(fixed, fit_over)}, truth[known])
    test = {m: test[m] for m in fixed}
    return Ensemble(fixed, fitted, known, _with_ensembles(oof, fixed, fitted), _with_ensembles(test, fixed, fitted))


def _with_ensembles(preds: dict[str, np.ndarray], fixed: dict[str, float],
                    fitted: dict[str, float]) -> dict[str, np.ndarray]:
    """The models' predictions followed by the fixed-weight and the fitted-weight averages."""
    return {**preds, "ensemble_fixed": weighted_average(preds, fixed),
            "ensemble_fitted": weighted_average({m: preds[m] for m in fitted}, fitted)}


def nested_cv(grids: dict[str, SnapshotGrid], truth: np.ndarray, folds: np.ndarray, fixed: dict[str, float],
              mode: str, fit_over: str = "weighted") -> dict[str, float]:
    """Nested CV lwlrap of each model's snapshot selection and of both ensembles, keys as `combine`'s.

    For each fold k, every model's cycles and pads (`mode` of fsdlib/selection.py) and the fitted weights are
    chosen on the OOF clips of the other folds and applied to fold k; the pooled predictions are scored once.
    Clips some model has no OOF prediction for are left out, as in `combine`.
    """
    known = np.all([np.isfinite(grids[m].oof).all(axis=(0, 1, 3)) for m in fixed], axis=0)
    folds, truth = np.asarray(folds)[known], np.asarray(truth)[known]
    grids = {m: grids[m].restricted(known) for m in fixed}
    chosen = {m: fold_selections(g.oof, truth, folds, g.cycles, g.pads, mode) for m, g in grids.items()}
    candidates = fit_candidates(fixed, fit_over)
    pooled: dict[str, np.ndarray] = {}
    for k in chosen[next(iter(fixed))]:
        held, rest = folds == k, folds != k
        fitted = fit_weights({m: average(g.oof[:, :, rest], g.cycles, g.pads, chosen[m][k])
                              for m, g in grids.items() if m in candidates}, truth[rest])
        held_out = {m: average(g.oof[:, :, held], g.cycles, g.pads, chosen[m][k]) for m, g in grids.items()}
        for name, pred in _with_ensembles(held_out, fixed, fitted).items():
            pooled.setdefault(name, np.zeros(truth.shape))[held] = pred
    return {name: lwlrap(truth, pred) for name, pred in pooled.items()}


def weighted_average(preds: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Average of the models' (n_clips, C) predictions with non-negative weights, normalised to sum 1.

    A weight for a model absent from `preds` is allowed only if it is 0.
    """
    if not preds:
        raise FsdError("no model predictions to average")
    for name, weight in weights.items():
        if not np.isfinite(weight) or weight < 0:
            raise FsdError(f"weight of model {name!r} must be a finite number >= 0, got {weight}")
        if name not in preds and weight > 0:
            raise FsdError(f"model {name!r} has weight {weight} but no predictions")
    shape = _common_shape(preds)
    missing = [name for name in preds if name not in weights]
    if missing:
        raise FsdError(f"no ensemble weight for model(s) {', '.join(map(repr, missing))}")
    total = sum(weights[name] for name in preds)
    if total <= 0:
        raise FsdError(f"all ensemble weights are 0 for models {', '.join(map(repr, preds))}")
    out = np.zeros(shape, dtype=np.float64)
    for name, pred in preds.items():
        if weights[name] > 0:
            out += (weights[name] / total) * np.asarray(pred, dtype=np.float64)
    return out


def fit_weights(preds: dict[str, np.ndarray], truth: np.ndarray, steps: int = DEFAULT_STEPS,
                seed: int = 0) -> dict[str, float]:
    """Non-negative weights summing to 1 that maximise the lwlrap of the weighted average against `truth`.

    Coordinate ascent on the simplex (move toward or away from one model by 25, 10, 5, 2 %) from the best of
    equal weights and each single model (always scored), up to `steps` lwlrap evaluations; the seed orders moves.
    """
    shape = _common_shape(preds)
    truth = np.asarray(truth)
    if truth.shape != shape:
        raise FsdError(f"truth has shape {truth.shape}, predictions have {shape}")
    if not np.any(truth > 0.5):
        raise FsdError("truth has no positive labels: lwlrap is undefined")
    for name, pred in preds.items():
        if not np.all(np.isfinite(pred)):
            raise FsdError(f"predictions of model {name!r} contain NaN or inf")
    names = list(preds)
    n = len(names)
    if n == 1:
        return {names[0]: 1.0}
    rng = np.random.default_rng(seed)
    scores: dict[tuple[float, ...], float] = {}

    def score(w: np.ndarray) -> float:
        key = tuple(np.round(w, 12))
        if key not in scores:
            scores[key] = lwlrap(truth, weighted_average(preds, dict(zip(names, w.tolist(), strict=True))))
        return scores[key]

    starts = [np.full(n, 1.0 / n)] + [np.eye(n)[i] for i in range(n)]
    best_w = max(starts, key=score)  # the first of equal scores wins: equal weights before single models
    best = score(best_w)
    for step in _STEP_SIZES:
        improved = True
        while improved and len(scores) < steps:
            improved = False
            for i in rng.permutation(n):
                for w in _moves(best_w, i, step):
                    if len(scores) >= steps:
                        break
                    if score(w) > best:
                        best_w, best, improved = w, score(w), True
    return dict(zip(names, best_w.tolist(), strict=True))


def _moves(w: np.ndarray, i: int, step: float) -> list[np.ndarray]:
    """Points on the simplex next to `w`: a `step` share moved toward model i, and away from it."""
    toward = (1.0 - step) * w
    toward[i] += step
    away = w.copy()
    away[i] = max(0.0, w[i] - step)
    moves = [toward]
    if away[i] < w[i] and away.sum() > 0:
        moves.append(away / away.sum())
    return [m for m in moves if not np.allclose(m, w)]


def _common_shape(preds: dict[str, np.ndarray]) -> tuple[int, ...]:
    """The one 2-D shape all models' predictions share; an error naming the first model that differs."""
    if not preds:
        raise FsdError("no model predictions given")
    shapes = {name: np.shape(pred) for name, pred in preds.items()}
    first, shape = next(iter(shapes.items()))
    for name, pred_shape in shapes.items():
        if len(pred_shape) != 2:
            raise FsdError(f"predictions of model {name!r} have shape {pred_shape}, expected (n_clips, n_classes)")
        if pred_shape != shape:
            raise FsdError(f"predictions of model {name!r} have shape {pred_shape}, model {first!r} has {shape}")
    return shape
