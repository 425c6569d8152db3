"""The ensemble's outputs: CV and test lwlrap of every model and ensemble, the submission, the weights and plots.

CV scores are on out-of-fold predictions of the curated clips; test scores (overall, Public, Private) only where the
test labels are known (docs/method.md §8).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsdlib.atomic import atomic_path, write_json
from fsdlib.dataset import Labels, read_label_table
from fsdlib.ensemble import Ensemble, combine
from fsdlib.fold_predictions import load_predictions
from fsdlib.metrics import lwlrap, lwlrap_per_class
from fsdlib.paths import PATHS, Paths
from fsdlib.plots import mean_curves, plot_cv_per_model, plot_per_class, plot_training_curves
from fsdlib.spec import check_choice

Scores = dict[str, dict[str, np.ndarray]]  # split (cv, test) -> model or ensemble -> per-class lwlrap


def usage_scores(truth: np.ndarray, preds: dict[str, np.ndarray], usage: np.ndarray) -> dict[str, dict[str, float]]:
    """lwlrap of each prediction set overall, and on the Public and Private parts present."""
    out = {}
    for name, p in preds.items():
        row = {"all": lwlrap(truth, p)}
        for part in ("Public", "Private"):
            if (usage == part).any():
                row[part.lower()] = lwlrap(truth[usage == part], p[usage == part])
        out[name] = row
    return out


def per_class_scores(truth: np.ndarray, preds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-class lwlrap of each prediction set (NaN for a class without positives)."""
    return {name: lwlrap_per_class(truth, p)[0] for name, p in preds.items()}


def score(ensemble: Ensemble, curated: Labels, test: Labels) -> tuple[dict[str, Any], Scores]:
    """The metrics (CV lwlrap, clips scored, test lwlrap when labelled) and the per-class lwlrap of each split."""
    truth = curated.targets[ensemble.known]
    cv = {name: lwlrap(truth, p) for name, p in ensemble.oof.items()}
    metrics: dict[str, Any] = {"cv": cv, "cv_clips": int(ensemble.known.sum())}
    per_class = {"cv": per_class_scores(truth, ensemble.oof)}
    if test.targets is not None:
        metrics["test"] = usage_scores(test.targets, ensemble.test, np.array(test.usage))
        per_class["test"] = per_class_scores(test.targets, ensemble.test)
    return metrics, per_class


def write_submission(path: Path, pred: np.ndarray, classes: Sequence[str], fnames: Sequence[str]) -> None:
    """The test predictions in the sample-submission layout: fname, then one column per class."""
    submission = pd.DataFrame(pred, columns=list(classes))
    submission.insert(0, "fname", list(fnames))
    with atomic_path(path) as tmp:
        submission.to_csv(tmp, index=False, float_format="%.6f")


def write_weights(path: Path, ensemble: Ensemble, submit: str) -> None:
    """The fixed weights (normalised to sum 1), the fitted ones, and which of them the submission used."""
    total = sum(ensemble.fixed.values())
    write_json(path, {"models": list(ensemble.fixed), "fixed": {m: w / total for m, w in ensemble.fixed.items()},
                      "fitted": ensemble.fitted, "submit": submit})


def write_metrics(paths: Paths, metrics: dict[str, Any], per_class: Scores, classes: Sequence[str]) -> None:
    """metrics.json, per_class.json (NaN as null) and per_class_cv.csv, the table DVC plots as bars."""
    write_json(paths.metrics / "metrics.json", metrics)
    write_json(paths.metrics / "per_class.json",
               {split: {name: _by_class(v, classes) for name, v in by_name.items()} for split, by_name in per_class.items()})
    rows = [{"class": c, "model": name, "lwlrap": float(v)}
            for name, values in per_class["cv"].items() for c, v in zip(classes, values, strict=True)]
    with atomic_path(paths.metrics / "per_class_cv.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _by_class(values: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    """Per-class values keyed by class name, NaN (a class without positives) as None."""
    return {c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, values, strict=True)}


def write_plots(paths: Paths, metrics: dict[str, Any], per_class: Scores, classes: Sequence[str], models: list[str],
                submit: str) -> None:
    """CV lwlrap per model, per-class lwlrap of the submitted ensemble and the models, and the training curves."""
    plot_cv_per_model(metrics["cv"], paths.metrics / "cv_per_model.png", "CV lwlrap per model (out-of-fold)")
    split = "test" if "test" in per_class else "cv"
    shown = {"ensemble": per_class[split][f"ensemble_{submit}"], **{m: per_class[split][m] for m in models}}
    plot_per_class(shown, classes, paths.metrics / "per_class.png", f"Per-class lwlrap ({split})")
    curves = {m: mean_curves(sorted((paths.models / m).glob("fold*/live"))) for m in models}
    plot_training_curves(curves, paths.metrics / "training_curves.png")


def report_ensemble(fixed: dict[str, float], submit: str, paths: Paths = PATHS) -> dict[str, Any]:
    """Combine the predictions of the models in `fixed`, write every ensemble output, and return the metrics.

    `submit` ("fixed" or "fitted") picks the ensemble whose test predictions become the submission.
    """
    check_choice("ensemble.submit", submit, ("fixed", "fitted"))
    models = list(fixed)
    classes, labels = read_label_table(paths.labels)
    preds = load_predictions(models, paths)
    ensemble = combine({m: preds[m]["oof"] for m in models}, {m: preds[m]["test"] for m in models}, fixed,
                       labels["curated"].targets)
    metrics, per_class = score(ensemble, labels["curated"], labels["test"])
    write_submission(paths.submission, ensemble.test[f"ensemble_{submit}"], classes, labels["test"].fnames)
    write_weights(paths.ensemble_weights, ensemble, submit)
    write_metrics(paths, metrics, per_class, classes)
    write_plots(paths, metrics, per_class, classes, models, submit)
    return metrics


def summary(metrics: dict[str, Any]) -> str:
    """CV lwlrap of every model and ensemble, and test lwlrap when scored, one line each."""
    lines = [f"CV lwlrap: {', '.join(f'{k} {v:.4f}' for k, v in metrics['cv'].items())}"]
    if "test" in metrics:
        scores = {k: v["all"] for k, v in metrics["test"].items()}
        lines.append(f"test lwlrap: {', '.join(f'{k} {v:.4f}' for k, v in scores.items())}")
    return "\n".join(lines)
