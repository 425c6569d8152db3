import numpy as np
import pytest

from fsdlib.errors import FsdError
from fsdlib.folds import assign_folds
from fsdlib.settings import FoldSettings


def _labels(n: int = 200, c: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.1).astype(np.float32)
    y[np.arange(n), rng.integers(0, c, n)] = 1
    return y


@pytest.mark.parametrize("method", ["multilabel_stratified", "kfold"])
def test_each_clip_in_one_fold_balanced(method: str) -> None:
    y = _labels()
    fold = assign_folds(y, FoldSettings(n_folds=5, seed=1, method=method))
    assert set(fold) == set(range(5))
    sizes = np.bincount(fold)
    assert sizes.min() >= 0.8 * len(y) / 5 and sizes.max() <= 1.2 * len(y) / 5


def test_stratified_balances_classes_better_than_chance() -> None:
    y = _labels(n=400)
    fold = assign_folds(y, FoldSettings(n_folds=5, seed=0))
    per_fold = np.stack([y[fold == k].sum(0) for k in range(5)])
    expected = y.sum(0) / 5
    assert np.abs(per_fold - expected).max() <= 2.0


def test_deterministic_and_seeded() -> None:
    y = _labels()
    a = assign_folds(y, FoldSettings(seed=3))
    np.testing.assert_array_equal(a, assign_folds(y, FoldSettings(seed=3)))
    assert not np.array_equal(a, assign_folds(y, FoldSettings(seed=4)))


def test_bad_config() -> None:
    with pytest.raises(FsdError, match="method"):
        assign_folds(_labels(), FoldSettings(method="random"))  # type: ignore[arg-type]
    with pytest.raises(FsdError, match="at least 2"):
        assign_folds(_labels(), FoldSettings(n_folds=1))
