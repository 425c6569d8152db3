"""Weighted averaging, OOF-fitted ensemble weights, the nested CV estimate, and the ensemble stage's outputs
(fsdlib/ensemble_outputs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_root, noisy_scores, random_truth

from fsdlib.dataset import label_table, read_dataset, read_label_table
from fsdlib.ensemble import combine, fit_weights, nested_cv, weighted_average
from fsdlib.ensemble_outputs import report_ensemble, selection_summary, summary
from fsdlib.errors import FsdError
from fsdlib.fold_predictions import write_arrays
from fsdlib.metrics import lwlrap
from fsdlib.paths import Paths
from fsdlib.selection import SnapshotGrid, average, select
from fsdlib.settings import EnsembleSettings


@pytest.fixture
def oof() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    truth = random_truth(rng)
    preds = {name: noisy_scores(rng, truth, s) for name, s in (("A", 1.5), ("B", 1.0), ("C", 0.5), ("noise", 0.0))}
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


def _grid(rng: np.random.Generator, truth: np.ndarray, signals: list[float], n_pads: int = 2) -> np.ndarray:
    """(cycles, pads, clips, C) predictions, one signal per cycle."""
    return np.stack([np.stack([noisy_scores(rng, truth, s) for _ in range(n_pads)]) for s in signals]).astype(np.float32)


def test_nested_cv_fixed_models_equal_their_cv_and_fitted_weights_are_honest() -> None:
    rng = np.random.default_rng(6)
    truth = random_truth(rng, n=200)
    folds = np.arange(200) % 4
    grids = {name: SnapshotGrid(rng.random((8, 2, *truth.shape)).astype(np.float32), np.zeros((1, 1, 1, 1)),
                                tuple(range(1, 9)), (0, 8)) for name in ("n1", "n2", "n3", "n4")}
    fixed = dict.fromkeys(grids, 1.0)
    nested = nested_cv(grids, truth, folds, fixed, "fixed")
    assert list(nested) == [*fixed, "ensemble_fixed", "ensemble_fitted"]
    for name, g in grids.items():
        assert nested[name] == pytest.approx(lwlrap(truth, g.oof.mean(axis=(0, 1), dtype=np.float64)), abs=1e-12)
    ens = combine({m: g.oof.mean(axis=(0, 1)) for m, g in grids.items()}, {m: np.zeros((1, 12)) for m in grids},
                  fixed, truth)
    assert nested["ensemble_fixed"] == pytest.approx(lwlrap(truth, ens.oof["ensemble_fixed"]), abs=1e-12)
    # pure noise: weights fitted, or snapshots chosen, on the clips scored look better than chosen on other folds
    assert lwlrap(truth, ens.oof["ensemble_fitted"]) > nested["ensemble_fitted"] + 0.01
    chosen = nested_cv(grids, truth, folds, fixed, "cv")
    for name, g in grids.items():
        assert g.select(truth, "cv").cv >= chosen[name]
    assert np.mean([g.select(truth, "cv").cv - chosen[name] for name, g in grids.items()]) > 0.01


def test_nested_cv_leaves_out_clips_without_predictions_and_needs_two_folds() -> None:
    rng = np.random.default_rng(7)
    truth = random_truth(rng, n=120)
    folds = np.arange(120) % 3
    oof = _grid(rng, truth, [0.0, 1.5, 1.5])
    oof[:, :, folds == 2] = np.nan
    grids = {"A": SnapshotGrid(oof, oof, (1, 2, 3), (0, 8))}
    known = folds < 2
    nested = nested_cv(grids, truth, folds, {"A": 1.0}, "cv")
    pooled = np.zeros((known.sum(), truth.shape[1]))
    for k in (0, 1):
        chosen = select(oof[:, :, known & (folds != k)], truth[known & (folds != k)], (1, 2, 3), (0, 8), "cv")
        pooled[folds[known] == k] = average(oof[:, :, folds == k], (1, 2, 3), (0, 8), chosen)
    assert nested["A"] == pytest.approx(lwlrap(truth[known], pooled), abs=1e-12)
    with pytest.raises(FsdError, match="two folds or more"):
        nested_cv(grids, truth, np.where(folds == 1, 0, folds), {"A": 1.0}, "cv")


N_CURATED, N_TEST = 40, 10
SIGNALS = {"A": [0.0, 2.0, 2.0], "B": [1.0, 1.0, 1.0], "C": [0.0, 0.0, 0.0]}  # A's first cycle untrained, C noise


def _layout(root: Path, test_labels: bool = True) -> tuple[Paths, tuple[str, ...]]:
    """A pipeline layout with a label table, three models' per-cycle × pad predictions and their dvclive curves.

    Clips of fold 2 (of 3) have no OOF predictions: a fold not trained.
    """
    paths = Paths(root)
    dataset = read_dataset(make_root(root / "dataset", n_curated=N_CURATED, n_test=N_TEST, test_labels=test_labels))
    paths.features.mkdir(parents=True)
    label_table(dataset).to_parquet(paths.labels, index=False)
    _, labels = read_label_table(paths.labels)
    rng = np.random.default_rng(5)
    folds = np.arange(N_CURATED) % 3
    test_truth = labels["test"].targets if test_labels else np.zeros((N_TEST, len(dataset.classes)))
    for m, signals in SIGNALS.items():
        oof = _grid(rng, labels["curated"].targets, signals)
        oof[:, :, folds == 2] = np.nan
        write_arrays(paths.predictions_of(m), {
            "test_fnames": np.array(dataset.test.fnames), "test": _grid(rng, test_truth, signals),
            "curated_fnames": np.array(dataset.curated.fnames), "curated_folds": folds, "oof": oof,
            "cycles": np.array([1, 2, 3]), "pads": np.array([8, 32]), "classes": np.array(dataset.classes)})
        for k in (0, 1):
            metrics = paths.fold_dir(m, k) / "live" / "plots" / "metrics"
            metrics.mkdir(parents=True)
            (metrics / "lr.tsv").write_text("step\tlr\n0\t0.1\n1\t0.05\n")
    return paths, dataset.classes


def test_report_ensemble_writes_every_output(tmp_path: Path) -> None:
    paths, classes = _layout(tmp_path)
    metrics, selection = report_ensemble(EnsembleSettings({"A": 3, "B": 1, "C": 0}, "fitted", "cv"), paths)
    known = int((np.arange(N_CURATED) % 3 < 2).sum())
    assert metrics["cv_clips"] == known and list(metrics["cv"]) == ["A", "B", "C", "ensemble_fixed", "ensemble_fitted"]
    assert list(metrics["cv_nested"]) == ["ensemble_fixed", "ensemble_fitted"]
    assert set(metrics["test"]["ensemble_fitted"]) == {"all", "public", "private"}
    assert json.loads((paths.metrics / "metrics.json").read_text()) == metrics
    assert json.loads((paths.metrics / "selection.json").read_text()) == selection
    weights = json.loads(paths.ensemble_weights.read_text())
    assert weights["fixed"] == {"A": 0.75, "B": 0.25, "C": 0.0} and weights["submit"] == "fitted"
    assert list(weights["fitted"]) == ["A", "B"]
    a = selection["models"]["A"]
    assert weights["snapshots"]["A"] == {"cycles": a["cycles"], "pads": a["pads"]} and 1 not in a["cycles"]
    assert a["cv"] == metrics["cv"]["A"] and a["cv"] >= a["cv_best_cycle"] and a["cv"] > a["cv_all"]
    assert a["cv_best_cycle"] == max(a["cv_per_cycle"].values()) and a["cv_per_cycle"]["1"] < a["cv_all"]
    assert a["test"] == metrics["test"]["A"]["all"] and a["test"] > a["test_all"]
    assert a["cv_nested"] <= a["cv"] + 1e-12
    assert selection["select"] == "cv" and selection["cv_clips"] == known
    assert set(selection["ensembles"]) == {"ensemble_fixed", "ensemble_fitted"}
    assert selection["ensembles"]["ensemble_fitted"]["cv_nested"] == metrics["cv_nested"]["ensemble_fitted"]
    submission = pd.read_csv(paths.submission)
    assert list(submission.columns) == ["fname", *classes] and len(submission) == N_TEST
    per_class = json.loads((paths.metrics / "per_class.json").read_text())
    assert set(per_class) == {"cv", "test"} and list(per_class["cv"]["A"]) == list(classes)
    table = pd.read_csv(paths.metrics / "per_class_cv.csv")
    assert list(table.columns) == ["class", "model", "lwlrap"] and len(table) == 5 * len(classes)
    for png in ("cv_per_model.png", "per_class.png", "training_curves.png"):
        assert (paths.metrics / png).read_bytes()[:4] == b"\x89PNG"
    lines = summary(metrics).splitlines()
    assert lines[0].startswith("CV lwlrap: A ") and lines[1].startswith("nested CV lwlrap: ensemble_fixed ")
    assert lines[2].startswith("test lwlrap: A ")
    shown = selection_summary(selection).splitlines()
    assert shown[0] == "snapshot selection: cv" and shown[1].startswith(f"  A: cycles {a['cycles'][0]}")
    assert "all snapshots" in shown[1] and "nested" in shown[1] and "test" in shown[1] and len(shown) == 6


def test_report_ensemble_fixed_selection_averages_every_snapshot(tmp_path: Path) -> None:
    paths, _ = _layout(tmp_path)
    metrics, selection = report_ensemble(EnsembleSettings({"A": 3, "B": 1, "C": 0}, "fixed", "fixed"), paths)
    _, labels = read_label_table(paths.labels)
    known = np.arange(N_CURATED) % 3 < 2
    for m in SIGNALS:
        with np.load(paths.predictions_of(m)) as z:
            oof, test = z["oof"].astype(np.float64).mean(axis=(0, 1)), z["test"].astype(np.float64).mean(axis=(0, 1))
        row = selection["models"][m]
        assert row["cycles"] == [1, 2, 3] and row["pads"] == [8, 32] and row["cv"] == row["cv_all"]
        assert row["cv"] == pytest.approx(lwlrap(labels["curated"].targets[known], oof[known]), abs=1e-12)
        assert row["cv_nested"] == pytest.approx(row["cv"], abs=1e-12)  # nothing chosen: nothing optimistic
        assert metrics["test"][m]["all"] == pytest.approx(lwlrap(labels["test"].targets, test), abs=1e-12)
    submission = pd.read_csv(paths.submission).iloc[:, 1:].to_numpy()
    with np.load(paths.predictions_of("A")) as za, np.load(paths.predictions_of("B")) as zb:
        expected = 0.75 * za["test"].astype(np.float64).mean(axis=(0, 1)) + 0.25 * zb["test"].mean(axis=(0, 1))
    np.testing.assert_allclose(submission, expected, atol=1e-6)


def test_report_ensemble_without_test_labels_and_errors(tmp_path: Path) -> None:
    paths, _ = _layout(tmp_path, test_labels=False)
    metrics, selection = report_ensemble(EnsembleSettings({"A": 1, "B": 1}, "fixed", "cv"), paths)
    assert "test" not in metrics and len(summary(metrics).splitlines()) == 2
    assert "test" not in selection["models"]["A"] and "test" not in selection_summary(selection)
    assert set(json.loads((paths.metrics / "per_class.json").read_text())) == {"cv"}
    with pytest.raises(FsdError, match=r"run predict@D"):
        report_ensemble(EnsembleSettings({"A": 1, "D": 1}, "fixed", "cv"), paths)
    with np.load(paths.predictions_of("A")) as z:
        arrays = {k: z[k] for k in z.files if k not in ("cycles", "pads")}
    write_arrays(paths.predictions_of("A"), {**arrays, "oof": arrays["oof"].mean(axis=(0, 1))})
    with pytest.raises(FsdError, match=r"older layout\); rerun predict"):
        report_ensemble(EnsembleSettings({"A": 1, "B": 1}, "fixed", "cv"), paths)


def test_report_ensemble_with_one_fold_has_no_nested_estimate(tmp_path: Path) -> None:
    paths, _ = _layout(tmp_path)
    for m in SIGNALS:
        with np.load(paths.predictions_of(m)) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["oof"][:, :, arrays["curated_folds"] == 1] = np.nan
        write_arrays(paths.predictions_of(m), arrays)
    metrics, selection = report_ensemble(EnsembleSettings({"A": 1, "B": 1}, "fixed", "cv"), paths)
    assert "cv_nested" not in metrics and selection["models"]["A"]["cv_nested"] is None
    assert "nested n/a" in selection_summary(selection)


def test_fit_over_all_lets_a_weight_0_model_into_the_fitted_weights() -> None:
    """A reported (weight-0) model that predicts far better than the weighted ones: "weighted" may not use it, "all"
    gives it weight; the fixed ensemble ignores it either way."""
    rng = np.random.default_rng(3)
    truth = random_truth(rng, 200, 8)
    oof = {"A": noisy_scores(rng, truth, 0.3), "B": noisy_scores(rng, truth, 0.3), "X": noisy_scores(rng, truth, 3.0)}
    test = {m: p[:5] for m, p in oof.items()}
    fixed = {"A": 1.0, "B": 1.0, "X": 0.0}
    weighted = combine(oof, test, fixed, truth)
    every = combine(oof, test, fixed, truth, fit_over="all")
    assert "X" not in weighted.fitted and every.fitted["X"] > 0.5
    assert lwlrap(truth, every.oof["ensemble_fitted"]) > lwlrap(truth, weighted.oof["ensemble_fitted"])
    assert np.array_equal(every.oof["ensemble_fixed"], weighted.oof["ensemble_fixed"])
