"""Stage `ensemble`: weighted average across models, fitted weights beside them, submission, metrics, plots."""

from pathlib import Path

import numpy as np
import pandas as pd
import typer

from fsdlib.atomic import atomic_path, write_json
from fsdlib.dataset import read_label_table
from fsdlib.ensemble import fit_weights, weighted_average
from fsdlib.errors import FsdError
from fsdlib.metrics import lwlrap, lwlrap_per_class
from fsdlib.plots import plot_cv_per_model, plot_per_class, plot_training_curves, read_dvclive_curves
from stages.common import PARAMS, load_params, section, stage
from stages.predict import PREDICTIONS
from stages.train import FEATURES, MODELS

SUBMISSION = Path("data/submission.csv")
WEIGHTS = Path("data/ensemble.json")
METRICS = Path("metrics")


def load_predictions(models: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Each model's predictions file, checked for the same clips and classes as the first one."""
    out = {}
    for name in models:
        path = PREDICTIONS / f"{name}.npz"
        if not path.is_file():
            raise FsdError(f"predictions of model {name} not found (run predict@{name})", path)
        with np.load(path) as z:
            out[name] = {k: z[k] for k in z.files}
        first = out[models[0]]
        for key in ("test_fnames", "curated_fnames", "classes"):
            if not np.array_equal(out[name][key], first[key]):
                raise FsdError(f"{key} differ from those of model {models[0]}; rerun predict", path)
    return out


def _scores(truth: np.ndarray, preds: dict[str, np.ndarray], usage: np.ndarray | None) -> dict[str, dict]:
    """lwlrap of each prediction set overall, and on the Public and Private parts when usage is known."""
    out = {}
    for name, p in preds.items():
        row = {"all": lwlrap(truth, p)}
        if usage is not None:
            for part in ("Public", "Private"):
                if (usage == part).any():
                    row[part.lower()] = lwlrap(truth[usage == part], p[usage == part])
        out[name] = row
    return out


def _curves(models: list[str]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Training curves per model: the mean over folds of each dvclive metric, by epoch."""
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for name in models:
        per_metric: dict[str, dict[int, list[float]]] = {}
        for live in sorted((MODELS / name).glob("fold*/live")):
            for metric, points in read_dvclive_curves(live).items():
                for step, value in points:
                    per_metric.setdefault(metric, {}).setdefault(step, []).append(value)
        curves[name] = {m: [(s, float(np.mean(v))) for s, v in sorted(d.items())] for m, d in per_metric.items()}
    return curves


@stage
def ensemble(params: Path = typer.Option(PARAMS, help="params file")) -> None:
    """Combine the models' predictions; write the submission, metrics and plots."""
    cfg = section(load_params(params), "ensemble", params)
    fixed = {str(k): float(v) for k, v in cfg["weights"].items()}
    models = list(fixed)
    classes, labels = read_label_table(FEATURES / "labels.parquet")
    preds = load_predictions(models)

    truth = labels["curated"].targets
    known = np.all([np.isfinite(preds[m]["oof"]).all(axis=1) for m in models], axis=0)  # folds that were trained
    oof = {m: preds[m]["oof"][known] for m in models}
    used = [m for m in models if fixed[m] > 0]  # weight 0: reported beside the others, not ensembled
    fitted = fit_weights({m: oof[m] for m in used}, truth[known])
    oof["ensemble_fixed"] = weighted_average(oof, fixed)
    oof["ensemble_fitted"] = weighted_average({m: oof[m] for m in used}, fitted)
    test = {m: preds[m]["test"] for m in models}
    test["ensemble_fixed"] = weighted_average(test, fixed)
    test["ensemble_fitted"] = weighted_average({m: test[m] for m in used}, fitted)

    cv = {name: lwlrap(truth[known], p) for name, p in oof.items()}
    metrics = {"cv": cv, "cv_clips": int(known.sum())}
    per_class = {"cv": {name: lwlrap_per_class(truth[known], p)[0] for name, p in oof.items()}}
    test_truth = labels["test"].targets
    if test_truth is not None:
        usage = np.array(labels["test"].usage)
        metrics["test"] = _scores(test_truth, test, usage)
        per_class["test"] = {name: lwlrap_per_class(test_truth, p)[0] for name, p in test.items()}

    submit = cfg.get("submit", "fixed")
    if submit not in ("fixed", "fitted"):
        raise FsdError(f"ensemble.submit must be fixed or fitted, got {submit!r}", params)
    submission = pd.DataFrame(test[f"ensemble_{submit}"], columns=list(classes))
    submission.insert(0, "fname", list(labels["test"].fnames))
    with atomic_path(SUBMISSION) as tmp:
        submission.to_csv(tmp, index=False, float_format="%.6f")
    total = sum(fixed.values())
    write_json(WEIGHTS, {"models": models, "fixed": {m: w / total for m, w in fixed.items()}, "fitted": fitted,
                         "submit": submit})

    METRICS.mkdir(exist_ok=True)
    write_json(METRICS / "metrics.json", metrics)
    write_json(METRICS / "per_class.json", {split: {name: {c: (None if np.isnan(v) else float(v))
                                                           for c, v in zip(classes, values, strict=True)}
                                                    for name, values in by_name.items()}
                                            for split, by_name in per_class.items()})
    rows = [{"class": c, "model": name, "lwlrap": float(v)}
            for name, values in per_class["cv"].items() for c, v in zip(classes, values, strict=True)]
    with atomic_path(METRICS / "per_class_cv.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    plot_cv_per_model(cv, METRICS / "cv_per_model.png", "CV lwlrap per model (out-of-fold)")
    split = "test" if "test" in per_class else "cv"
    shown = {"ensemble": per_class[split][f"ensemble_{submit}"], **{m: per_class[split][m] for m in models}}
    plot_per_class(shown, classes, METRICS / "per_class.png", f"Per-class lwlrap ({split})")
    plot_training_curves(_curves(models), METRICS / "training_curves.png")
    print(f"CV lwlrap: {', '.join(f'{k} {v:.4f}' for k, v in cv.items())}")
    if "test" in metrics:
        scores = {k: v["all"] for k, v in metrics["test"].items()}
        print(f"test lwlrap: {', '.join(f'{k} {v:.4f}' for k, v in scores.items())}")
