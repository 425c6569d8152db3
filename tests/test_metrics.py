import numpy as np
import pytest
from sklearn.metrics import label_ranking_average_precision_score

from fsdlib.metrics import lwlrap, lwlrap_per_class


def _reference(truth: np.ndarray, scores: np.ndarray) -> float:
    """Straightforward per-clip loop: precision at each true label's (pessimistic) rank."""
    precisions = []
    for t, s in zip(truth, scores, strict=True):
        for j in np.flatnonzero(t):
            above = s >= s[j]
            precisions.append((above & (t > 0)).sum() / above.sum())
    return float(np.mean(precisions))


def _random(n: int = 300, c: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, c)) < 0.08).astype(float)
    truth[np.arange(n), rng.integers(0, c, n)] = 1
    return truth, rng.random((n, c))


def test_matches_reference_without_ties() -> None:
    truth, scores = _random()
    assert lwlrap(truth, scores) == pytest.approx(_reference(truth, scores), abs=1e-12)


def test_hand_worked_examples_with_ties() -> None:
    # clip 1: true {0}; scores 0.5 tie with label 1 -> rank 2, 1 hit -> 1/2
    # clip 2: true {1, 2}; label 2 ranks 1st -> 1/1; label 1 ties with label 0 at rank 3 -> 2/3
    truth = np.array([[1, 0, 0], [0, 1, 1]])
    scores = np.array([[0.5, 0.5, 0.1], [0.2, 0.2, 0.9]])
    assert lwlrap(truth, scores) == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    per_class, weights = lwlrap_per_class(truth, scores)
    np.testing.assert_allclose(per_class, [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 1 / 3])


def test_all_tied_scores_give_label_share() -> None:
    truth = np.array([[1, 1, 0, 0]])
    assert lwlrap(truth, np.zeros((1, 4))) == pytest.approx(0.5)


def test_overall_is_weighted_per_class_and_single_label_equals_lrap() -> None:
    truth, scores = _random(seed=1)
    per_class, weights = lwlrap_per_class(truth, scores)
    assert np.nansum(per_class * weights) == pytest.approx(lwlrap(truth, scores))
    single = np.zeros_like(truth)
    single[np.arange(len(truth)), truth.argmax(1)] = 1
    assert lwlrap(single, scores) == pytest.approx(label_ranking_average_precision_score(single, scores))


def test_perfect_and_class_without_positives() -> None:
    truth = np.array([[1, 0, 0], [0, 1, 0]])
    assert lwlrap(truth, truth + 0.0) == 1.0
    assert np.isnan(lwlrap_per_class(truth, truth + 0.0)[0][2])
    with pytest.raises(ValueError, match="NaN"):
        lwlrap(truth, np.full((2, 3), np.nan))

