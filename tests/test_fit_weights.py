"""fit_weights finds an optimum inside the simplex, away from the equal weights and single models it starts from."""

import numpy as np
import pytest
from conftest import random_truth

from fsdlib.ensemble import fit_weights, weighted_average
from fsdlib.metrics import lwlrap


def test_fit_weights_finds_an_interior_optimum() -> None:
    """Three models whose noise cancels only at weights 0.2 : 0.3 : 0.5, where the ranking is perfect."""
    rng = np.random.default_rng(0)
    truth = random_truth(rng).astype(np.float64)
    n1, n2 = 3.0 * rng.standard_normal(truth.shape), 3.0 * rng.standard_normal(truth.shape)
    preds = {"A": truth + n1, "B": truth + n2, "C": truth - (0.2 * n1 + 0.3 * n2) / 0.5}

    def score(weights: dict[str, float]) -> float:
        return lwlrap(truth, weighted_average(preds, weights))

    assert score({"A": 0.2, "B": 0.3, "C": 0.5}) == 1.0
    starts = [dict.fromkeys(preds, 1 / 3)] + [{m: float(m == one) for m in preds} for one in preds]
    assert max(score(w) for w in starts) < 0.75
    fitted = fit_weights(preds, truth)
    assert score(fitted) > 0.99
    assert [fitted[m] for m in preds] == pytest.approx([0.2, 0.3, 0.5], abs=0.06)
