import numpy as np
import pytest

from fsdlib.errors import FsdError
from fsdlib.pseudo import ALL_FOLDS, label_frame, labels_for_fold, sharpen, soft_labels

CLASSES = ["a", "b", "c", "d"]


def _teacher(seed: int = 0, folds: int = 3, n: int = 20) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.random((n, len(CLASSES))).astype(np.float32) for k in range(folds)}


@pytest.mark.parametrize("temperature", [1.0, 1.5, 2.0])
def test_sharpened_rows_are_distributions(temperature: float) -> None:
    q = sharpen(_teacher()[0], temperature)
    assert np.all(q >= 0)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-6)


def test_temperature_one_keeps_the_normalised_mean_and_larger_concentrates() -> None:
    p = _teacher()[0]
    np.testing.assert_allclose(sharpen(p, 1.0), p / p.sum(axis=1, keepdims=True), rtol=1e-6)
    entropy = [float(-(q * np.log(q)).sum(axis=1).mean()) for q in (sharpen(p, t) for t in (1.0, 1.5, 2.0))]
    assert entropy[0] > entropy[1] > entropy[2]
    assert np.array_equal(sharpen(p, 2.0).argmax(1), p.argmax(1))


def test_all_zero_row_becomes_uniform_and_bad_temperature_is_refused() -> None:
    np.testing.assert_allclose(sharpen(np.zeros((1, 4)), 2.0), 0.25)
    with pytest.raises(FsdError, match="temperature"):
        sharpen(np.ones((1, 4)), 0.0)


def test_all_folds_is_the_sharpened_mean_shared_by_every_fold() -> None:
    teacher = _teacher()
    labels = soft_labels(teacher, "all_folds", 2.0)
    assert list(labels) == [ALL_FOLDS]
    np.testing.assert_allclose(labels[ALL_FOLDS], sharpen(np.mean(list(teacher.values()), axis=0), 2.0), rtol=1e-6)


def test_leak_free_fold_k_depends_only_on_teacher_fold_k() -> None:
    teacher = _teacher()
    before = soft_labels(teacher, "leak_free", 2.0)
    changed = dict(teacher)
    changed[2] = _teacher(seed=99)[2]
    after = soft_labels(changed, "leak_free", 2.0)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert not np.array_equal(before[2], after[2])
    assert not np.array_equal(soft_labels(teacher, "all_folds", 2.0)[ALL_FOLDS],
                              soft_labels(changed, "all_folds", 2.0)[ALL_FOLDS])


def test_table_round_trip_in_store_order() -> None:
    teacher = _teacher(n=5)
    fnames = [f"n{i}.wav" for i in range(5)]
    for variant in ("all_folds", "leak_free"):
        table = label_frame(soft_labels(teacher, variant, 1.5), fnames, CLASSES, variant, 1.5)
        assert set(table["variant"]) == {variant} and set(table["temperature"]) == {1.5}
        order = fnames[::-1]
        got = labels_for_fold(table, 1, order, CLASSES, "test")
        expected = soft_labels(teacher, variant, 1.5)[1 if variant == "leak_free" else ALL_FOLDS][::-1]
        np.testing.assert_allclose(got, expected)
    with pytest.raises(FsdError, match="no pseudo label"):
        labels_for_fold(table, 1, ["unknown.wav"], CLASSES, "test")
