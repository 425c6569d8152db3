"""Weighted averaging, OOF-fitted ensemble weights, and the ensemble stage's outputs (fsdlib/report.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_root

from fsdlib.dataset import label_table, read_dataset
from fsdlib.ensemble import combine, fit_weights, weighted_average
from fsdlib.errors import FsdError
from fsdlib.fold_predictions import write_arrays
from fsdlib.metrics import lwlrap
from fsdlib.paths import Paths
from fsdlib.report import report_ensemble, summary


def _truth(rng: np.random.Generator, n: int = 300, c: int = 12) -> np.ndarray:
    truth = rng.random((n, c)) < 0.05
    truth[np.arange(n), rng.integers(0, c, n)] = True
    return truth


def _model(rng: np.random.Generator, truth: np.ndarray, signal: float) -> np.ndarray:
    """Probabilities whose logits are `signal` × truth plus unit Gaussian noise."""
    return 1.0 / (1.0 + np.exp(-(signal * truth + rng.standard_normal(truth.shape))))


@pytest.fixture
def oof() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    truth = _truth(rng)
    preds = {name: _model(rng, truth, s) for name, s in (("A", 1.5), ("B", 1.0), ("C", 0.5), ("noise", 0.0))}
    return preds, truth


def test_weighted_average_single_model_and_zero_weight() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((5, 3)), rng.random((5, 3))
    np.testing.assert_allclose(weighted_average({"a": a}, {"a": 0.3}), a)
    np.testing.assert_allclose(weighted_average({"a": a, "b": b}, {"a": 2.0, "b": 0.0}), a)


def test_weighted_average_normalises_weights() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random((5, 3)), rng.random((5, 3))
    out = weighted_average({"a": a, "b": b}, {"a": 3.0, "b": 1.0})
    np.testing.assert_allclose(out, 0.75 * a + 0.25 * b)
    np.testing.assert_allclose(weighted_average({"a": a, "b": b}, {"a": 30.0, "b": 10.0}), out)
    unused = weighted_average({"a": a, "b": b}, {"a": 3.0, "b": 1.0, "absent": 0.0})
    np.testing.assert_allclose(unused, out)


@pytest.mark.parametrize(
    ("preds", "weights", "message"),
    [
        ({"a": np.zeros((4, 3)), "b": np.zeros((4, 2))}, {"a": 1, "b": 1}, "'b'"),
        ({"a": np.zeros((4, 3))}, {"a": 1, "b": 1}, "'b'"),
        ({"a": np.zeros((4, 3)), "b": np.zeros((4, 3))}, {"a": 1}, "'b'"),
        ({"a": np.zeros((4, 3)), "b": np.zeros((4, 3))}, {"a": 0, "b": 0}, "all ensemble weights are 0"),
        ({"a": np.zeros((4, 3))}, {"a": -1}, "'a'"),
        ({"a": np.zeros(4)}, {"a": 1}, "'a'"),
        ({}, {}, "no model"),
    ],
)
def test_weighted_average_errors(preds: dict, weights: dict, message: str) -> None:
    with pytest.raises(FsdError, match=message):
        weighted_average(preds, weights)


def test_fit_weights_simplex_and_deterministic(oof: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    preds, truth = oof
    weights = fit_weights(preds, truth, seed=3)
    assert list(weights) == list(preds)
    assert all(w >= 0 for w in weights.values())
    assert sum(weights.values()) == pytest.approx(1.0)
    assert fit_weights(preds, truth, seed=3) == weights


def test_fit_weights_not_worse_than_equal_or_best_single(oof: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    preds, truth = oof
    for steps in (0, 10, 60):
        fitted = lwlrap(truth, weighted_average(preds, fit_weights(preds, truth, steps=steps)))
        assert fitted >= lwlrap(truth, weighted_average(preds, dict.fromkeys(preds, 1.0)))
        assert fitted >= max(lwlrap(truth, p) for p in preds.values())


def test_fit_weights_gives_noise_model_small_weight(oof: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    preds, truth = oof
    weights = fit_weights(preds, truth)
    assert weights["noise"] < 0.2
    assert weights["A"] == max(weights.values())
    two = fit_weights({"noise": preds["noise"], "A": preds["A"]}, truth)
    assert two["noise"] < 0.2


def test_fit_weights_single_model_and_errors(oof: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    preds, truth = oof
    assert fit_weights({"A": preds["A"]}, truth) == {"A": 1.0}
    with pytest.raises(FsdError, match="shape"):
        fit_weights(preds, truth[:10])
    with pytest.raises(FsdError, match="no positive"):
        fit_weights(preds, np.zeros_like(truth))
    with pytest.raises(FsdError, match="'B'"):
        fit_weights({**preds, "B": np.full(truth.shape, np.nan)}, truth)


def test_combine_drops_untrained_folds_and_fits_positive_weights_only(
        oof: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    preds, truth = oof
    oof_preds = {m: p.copy() for m, p in preds.items()}
    oof_preds["B"][:10] = np.nan  # a fold model B did not train
    rng = np.random.default_rng(4)
    test = {m: rng.random((7, truth.shape[1])) for m in preds}
    fixed = {"A": 3.0, "B": 4.0, "C": 3.0, "noise": 0.0}
    ens = combine(oof_preds, test, fixed, truth)
    assert ens.known.sum() == len(truth) - 10 and not ens.known[:10].any()
    assert list(ens.oof) == [*fixed, "ensemble_fixed", "ensemble_fitted"] and list(ens.test) == list(ens.oof)
    assert list(ens.fitted) == ["A", "B", "C"]
    kept = {m: p[10:] for m, p in preds.items()}
    np.testing.assert_array_equal(ens.oof["ensemble_fixed"], weighted_average(kept, fixed))
    np.testing.assert_array_equal(ens.test["ensemble_fitted"], weighted_average(test, {**ens.fitted, "noise": 0.0}))
    assert ens.fitted == fit_weights({m: kept[m] for m in ("A", "B", "C")}, truth[10:])


def _layout(root: Path, test_labels: bool = True) -> tuple[Paths, tuple[str, ...]]:
    """A pipeline layout with a label table, three models' predictions and their dvclive curves."""
    paths = Paths(root)
    dataset = read_dataset(make_root(root / "dataset", n_curated=12, n_test=6, test_labels=test_labels))
    paths.features.mkdir(parents=True)
    label_table(dataset).to_parquet(paths.labels, index=False)
    rng = np.random.default_rng(5)
    n_classes = len(dataset.classes)
    for m in ("A", "B", "C"):
        oof = rng.random((len(dataset.curated), n_classes)).astype(np.float32)
        oof[:2] = np.nan
        write_arrays(paths.predictions_of(m), {
            "test_fnames": np.array(dataset.test.fnames), "test": rng.random((6, n_classes)).astype(np.float32),
            "curated_fnames": np.array(dataset.curated.fnames), "oof": oof, "classes": np.array(dataset.classes)})
        for k in (0, 1):
            metrics = paths.fold_dir(m, k) / "live" / "plots" / "metrics"
            metrics.mkdir(parents=True)
            (metrics / "lr.tsv").write_text("step\tlr\n0\t0.1\n1\t0.05\n")
    return paths, dataset.classes


def test_report_ensemble_writes_every_output(tmp_path: Path) -> None:
    paths, classes = _layout(tmp_path)
    metrics = report_ensemble({"A": 3, "B": 1, "C": 0}, "fitted", paths)
    assert metrics["cv_clips"] == 10 and list(metrics["cv"]) == ["A", "B", "C", "ensemble_fixed", "ensemble_fitted"]
    assert set(metrics["test"]["ensemble_fitted"]) == {"all", "public", "private"}
    assert json.loads((paths.metrics / "metrics.json").read_text()) == metrics
    weights = json.loads(paths.ensemble_weights.read_text())
    assert weights["fixed"] == {"A": 0.75, "B": 0.25, "C": 0.0} and weights["submit"] == "fitted"
    assert list(weights["fitted"]) == ["A", "B"]
    submission = pd.read_csv(paths.submission)
    assert list(submission.columns) == ["fname", *classes] and len(submission) == 6
    per_class = json.loads((paths.metrics / "per_class.json").read_text())
    assert set(per_class) == {"cv", "test"} and list(per_class["cv"]["A"]) == list(classes)
    table = pd.read_csv(paths.metrics / "per_class_cv.csv")
    assert list(table.columns) == ["class", "model", "lwlrap"] and len(table) == 5 * len(classes)
    for png in ("cv_per_model.png", "per_class.png", "training_curves.png"):
        assert (paths.metrics / png).read_bytes()[:4] == b"\x89PNG"
    assert summary(metrics).splitlines()[1].startswith("test lwlrap: A ")


def test_report_ensemble_without_test_labels_and_errors(tmp_path: Path) -> None:
    paths, _ = _layout(tmp_path, test_labels=False)
    metrics = report_ensemble({"A": 1, "B": 1}, "fixed", paths)
    assert "test" not in metrics and len(summary(metrics).splitlines()) == 1
    assert set(json.loads((paths.metrics / "per_class.json").read_text())) == {"cv"}
    with pytest.raises(FsdError, match="ensemble.submit must be fixed or fitted"):
        report_ensemble({"A": 1}, "best", paths)
    with pytest.raises(FsdError, match=r"run predict@D"):
        report_ensemble({"A": 1, "D": 1}, "fixed", paths)
