"""Weighted averaging and OOF-fitted ensemble weights."""

from __future__ import annotations

import numpy as np
import pytest

from fsdlib.ensemble import fit_weights, weighted_average
from fsdlib.errors import FsdError
from fsdlib.metrics import lwlrap


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
