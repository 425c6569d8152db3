"""The ensemble's outputs: CV and test lwlrap of every model and ensemble, the submission, the weights and plots.

CV scores are on out-of-fold predictions of the curated clips; test scores (overall, Public, Private) only where the
test labels are known (docs/method.md §8). Each model first averages the snapshot cycles and pads chosen for it
(docs/method.md §11); selection.json sets the chosen CV beside every snapshot's, the nested estimate and the test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsdlib.atomic import atomic_path, write_json
from fsdlib.dataset import Labels, read_label_table
from fsdlib.ensemble import Ensemble, combine, nested_cv
from fsdlib.fold_predictions import load_predictions
from fsdlib.metrics import lwlrap, lwlrap_per_class
from fsdlib.paths import PATHS, Paths
from fsdlib.plots import mean_curves, plot_cv_per_model, plot_per_class, plot_training_curves
from fsdlib.selection import Selection, SnapshotGrid, cycle_scores, describe
from fsdlib.settings import EnsembleSettings

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


def write_weights(path: Path, ensemble: Ensemble, submit: str, chosen: dict[str, Selection]) -> None:
    """The fixed weights (normalised to sum 1), the fitted ones, which of them the submission used, and each model's
    snapshot cycles and pads."""
    total = sum(ensemble.fixed.values())
    write_json(path, {"models": list(ensemble.fixed), "fixed": {m: w / total for m, w in ensemble.fixed.items()},
                      "fitted": ensemble.fitted, "submit": submit,
                      "snapshots": {m: {"cycles": list(c.cycles), "pads": list(c.pads)} for m, c in chosen.items()}})


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
                submit: str, every_snapshot: dict[str, float] | None = None) -> None:
    """CV lwlrap per model (every snapshot's average as markers, when given), per-class lwlrap of the submitted
    ensemble and the models, and the training curves."""
    plot_cv_per_model(metrics["cv"], paths.metrics / "cv_per_model.png", "CV lwlrap per model (out-of-fold)",
                      every_snapshot, "all snapshots and pads")
    split = "test" if "test" in per_class else "cv"
    shown = {"ensemble": per_class[split][f"ensemble_{submit}"], **{m: per_class[split][m] for m in models}}
    plot_per_class(shown, classes, paths.metrics / "per_class.png", f"Per-class lwlrap ({split})")
    curves = {m: mean_curves(sorted((paths.models / m).glob("fold*/live"))) for m in models}
    plot_training_curves(curves, paths.metrics / "training_curves.png")


def selection_report(grids: dict[str, SnapshotGrid], chosen: dict[str, Selection], truth: np.ndarray,
                     mode: str, ensemble: Ensemble, every: Ensemble, nested: dict[str, float] | None,
                     test: Labels) -> dict[str, Any]:
    """Per model and ensemble: the CV of the chosen snapshots beside that of every snapshot and pad, the nested
    estimate, each cycle alone, and the test lwlrap of both when the test labels are known."""
    truth = truth[ensemble.known]
    names = [*chosen, "ensemble_fixed", "ensemble_fitted"]
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        row: dict[str, Any] = {}
        if name in chosen:
            per_cycle = cycle_scores(grids[name].oof[:, :, ensemble.known], truth, grids[name].cycles, grids[name].pads)
            best = max(per_cycle, key=lambda c: per_cycle[c])
            row.update(cycles=list(chosen[name].cycles), pads=list(chosen[name].pads), best_cycle=best,
                       cv_best_cycle=per_cycle[best], cv_per_cycle={str(c): v for c, v in per_cycle.items()})
        row.update(cv=lwlrap(truth, ensemble.oof[name]), cv_nested=None if nested is None else nested[name],
                   cv_all=lwlrap(truth, every.oof[name]))
        if test.targets is not None:
            row.update(test=lwlrap(test.targets, ensemble.test[name]), test_all=lwlrap(test.targets, every.test[name]))
        rows[name] = row
    return {"select": mode, "cv_clips": int(ensemble.known.sum()), "models": {m: rows[m] for m in chosen},
            "ensembles": {e: rows[e] for e in names[len(chosen):]}}


def report_ensemble(settings: EnsembleSettings, paths: Paths = PATHS) -> tuple[dict[str, Any], dict[str, Any]]:
    """Combine the predictions of the models weighted in `settings`, write every ensemble output; return the metrics
    and the snapshot selection report (metrics/selection.json).

    `select` says which snapshot cycles and pads each model averages (fsdlib/selection.py); `submit` picks the
    ensemble whose test predictions become the submission; `fit_over` which models the fitted weights may use
    (fsdlib/ensemble.py).
    """
    fixed, submit, select, fit_over = settings.weights, settings.submit, settings.select, settings.fit_over
    models = list(fixed)
    classes, labels = read_label_table(paths.labels)
    preds = load_predictions(models, paths)
    truth, folds = labels["curated"].targets, preds[models[0]]["curated_folds"]
    grids = {m: SnapshotGrid.of(preds[m]) for m in models}
    known = np.all([np.isfinite(g.oof).all(axis=(0, 1, 3)) for g in grids.values()], axis=0)
    chosen = {m: g.restricted(known).select(truth[known], select) for m, g in grids.items()}
    ensemble = _combine(grids, chosen, fixed, truth, fit_over)
    all_snapshots = {m: g.restricted(known).select(truth[known], "fixed") for m, g in grids.items()}
    every = ensemble if select == "fixed" else _combine(grids, all_snapshots, fixed, truth, fit_over)
    nested = nested_cv(grids, truth, folds, fixed, select, fit_over) if len(set(folds[known].tolist())) > 1 else None
    metrics, per_class = score(ensemble, labels["curated"], labels["test"])
    if nested is not None:
        metrics["cv_nested"] = {e: nested[e] for e in ("ensemble_fixed", "ensemble_fitted")}
    selection = selection_report(grids, chosen, truth, select, ensemble, every, nested, labels["test"])
    write_json(paths.metrics / "selection.json", selection)
    write_submission(paths.submission, ensemble.test[f"ensemble_{submit}"], classes, labels["test"].fnames)
    write_weights(paths.ensemble_weights, ensemble, submit, chosen)
    write_metrics(paths, metrics, per_class, classes)
    every_cv = {m: selection["models"][m]["cv_all"] for m in models} if select == "cv" else None
    write_plots(paths, metrics, per_class, classes, models, submit, every_cv)
    return metrics, selection


def _combine(grids: dict[str, SnapshotGrid], chosen: dict[str, Selection], fixed: dict[str, float],
             truth: np.ndarray, fit_over: str) -> Ensemble:
    """`combine` of each model's predictions averaged over its chosen snapshot cycles and pads."""
    averaged = {m: g.averaged(chosen[m]) for m, g in grids.items()}
    return combine({m: a[0] for m, a in averaged.items()}, {m: a[1] for m, a in averaged.items()}, fixed, truth,
                   fit_over)


def summary(metrics: dict[str, Any]) -> str:
    """CV lwlrap of every model and ensemble, its nested estimate, and test lwlrap when scored, one line each."""
    lines = [f"CV lwlrap: {', '.join(f'{k} {v:.4f}' for k, v in metrics['cv'].items())}"]
    if "cv_nested" in metrics:
        lines.append(f"nested CV lwlrap: {', '.join(f'{k} {v:.4f}' for k, v in metrics['cv_nested'].items())}")
    if "test" in metrics:
        scores = {k: v["all"] for k, v in metrics["test"].items()}
        lines.append(f"test lwlrap: {', '.join(f'{k} {v:.4f}' for k, v in scores.items())}")
    return "\n".join(lines)


def selection_summary(selection: dict[str, Any]) -> str:
    """One line per model and ensemble: what was averaged, CV chosen vs all snapshots vs nested, and test."""
    def scores(row: dict[str, Any]) -> str:
        nested = "n/a" if row["cv_nested"] is None else f"{row['cv_nested']:.4f}"
        text = f"CV {row['cv']:.4f} (all snapshots {row['cv_all']:.4f}, nested {nested})"
        return text + (f", test {row['test']:.4f} (all snapshots {row['test_all']:.4f})" if "test" in row else "")

    lines = [f"snapshot selection: {selection['select']}"]
    for name, row in selection["models"].items():
        chosen = describe(row["cycles"], row["pads"])
        lines.append(f"  {name}: {chosen}; {scores(row)}; best cycle {row['best_cycle']} {row['cv_best_cycle']:.4f}")
    lines += [f"  {name}: {scores(row)}" for name, row in selection["ensembles"].items()]
    return "\n".join(lines)
