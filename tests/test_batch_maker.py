"""BatchMaker refuses an epoch the fold cannot fill (docs/method.md §5), and train_fold never asks for one; the
prefetch thread its batches come through."""

import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fsdlib.batches import BatchMaker, FoldData
from fsdlib.errors import FsdError
from fsdlib.prefetch import prefetch
from fsdlib.train import FoldTraining

sys.path.insert(0, str(Path(__file__).parent))
from test_train import N_CLASSES, _spec, _store  # noqa: E402


@pytest.fixture
def data(tmp_path: Path) -> FoldData:
    """48 curated clips, all in training, and 20 noisy clips."""
    curated, y = _store(tmp_path / "curated.logmel.arrow", 48, seed=0)
    noisy, ny = _store(tmp_path / "noisy.logmel.arrow", 20, seed=1, noisy=True)
    return FoldData(curated, y, np.arange(48), np.arange(0), noisy, ny)


def _train_on(data: FoldData, n: int) -> FoldData:
    """The same stores with only the first n curated clips in training."""
    return replace(data, train_idx=np.arange(n))


def test_more_steps_than_the_fold_fills_are_refused_in_the_constructor(data: FoldData) -> None:
    with pytest.raises(FsdError, match="^4 steps of batch 16 need 64 training clips, the fold has 48$"):
        BatchMaker(_spec(batch=16), data, steps_per_epoch=4, seed=0)


def test_every_step_the_fold_fills_is_a_full_batch(data: FoldData) -> None:
    batches = list(BatchMaker(_spec(batch=16), data, steps_per_epoch=3, seed=0).epoch())
    assert [len(b.curated.x) for b in batches] == [16, 16, 16]
    assert [len(b.noisy.x) for b in batches] == [16, 16, 16]  # the noisy store (20 clips) cycles
    # a partial last batch is refused too: 49 clips would leave one clip for a 4th step of 16
    with pytest.raises(FsdError, match="4 steps of batch 16 need 64 training clips, the fold has 47"):
        BatchMaker(_spec(batch=16), _train_on(data, 47), steps_per_epoch=4, seed=0)


def test_a_fold_smaller_than_a_batch_trains_one_short_step(data: FoldData) -> None:
    small = _train_on(data, 5)
    [batch] = BatchMaker(_spec(batch=12), small, steps_per_epoch=1, seed=0).epoch()
    assert len(batch.curated.x) == 5 and len(batch.noisy.x) == 12
    with pytest.raises(FsdError, match="^2 steps of batch 12 need 24 training clips, the fold has 5$"):
        BatchMaker(_spec(batch=12), small, steps_per_epoch=2, seed=0)


def test_an_empty_fold_or_epoch_is_refused(data: FoldData) -> None:
    with pytest.raises(FsdError, match="^1 step of batch 12 needs 12 training clips, the fold has 0$"):
        BatchMaker(_spec(batch=12), _train_on(data, 0), steps_per_epoch=1, seed=0)
    with pytest.raises(FsdError, match="at least 1 step, got 0"):
        BatchMaker(_spec(batch=12), data, steps_per_epoch=0, seed=0)


def test_multitask_needs_noisy_clips(data: FoldData, tmp_path: Path) -> None:
    empty, ny = _store(tmp_path / "empty.logmel.arrow", 0, seed=2)
    no_noisy = replace(data, noisy=empty, noisy_targets=ny)
    with pytest.raises(FsdError, match="noisy store has no clips"):
        BatchMaker(_spec(batch=12), no_noisy, steps_per_epoch=1, seed=0)
    BatchMaker(_spec(batch=12, multitask=False), no_noisy, steps_per_epoch=1, seed=0)  # no noisy batch drawn


@pytest.mark.parametrize("n", [1, 11, 12, 13, 23, 24, 47, 48])
def test_train_folds_own_steps_per_epoch_always_fit(data: FoldData, n: int) -> None:
    spec = _spec(batch=12)
    fold = _train_on(data, n)
    run = FoldTraining(spec, fold, N_CLASSES, "T", 0, None, "cpu")
    assert run.steps_per_epoch == max(1, n // 12)
    batches = list(BatchMaker(spec, fold, run.steps_per_epoch, seed=0).epoch())
    assert len(batches) == run.steps_per_epoch and all(len(b.curated.x) == min(n, 12) for b in batches)


@pytest.mark.parametrize("depth", [1, 2])
def test_prefetch_runs_depth_items_ahead_stops_with_the_consumer_and_hands_on_errors(depth: int) -> None:
    made: list[int] = []

    def items(fail_at: int | None = None):
        for i in range(10):
            if i == fail_at:
                raise ValueError(f"item {i} failed")
            made.append(i)
            yield i

    batches = prefetch(items(), depth=depth, name="fsdlib-test")
    assert next(batches) == 0
    deadline = time.monotonic() + 10
    while len(made) < 1 + depth and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)
    assert made == list(range(1 + depth))  # the item in use and `depth` ahead, no more
    batches.close()
    assert made == list(range(1 + depth)) and "fsdlib-test" not in [t.name for t in threading.enumerate()]
    made.clear()
    got = []
    with pytest.raises(ValueError, match="item 4 failed"):
        for item in prefetch(items(fail_at=4), depth=depth):
            got.append(item)
    assert got == [0, 1, 2, 3]
