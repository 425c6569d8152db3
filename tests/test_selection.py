"""Snapshot cycle and pad selection by OOF lwlrap (fsdlib/selection.py), the per-cycle × pad predictions file, and
the teacher's cycles."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_root, noisy_scores, random_truth

from fsdlib import predict
from fsdlib.dataset import label_table, read_dataset, read_label_table
from fsdlib.errors import FsdError
from fsdlib.fold_data import open_subset
from fsdlib.fold_predictions import model_predictions, teacher_predictions
from fsdlib.metrics import lwlrap
from fsdlib.models import build_network
from fsdlib.paths import Paths
from fsdlib.predict import load_snapshot, predict_snapshots, snapshot_paths
from fsdlib.selection import (
    Selection,
    SnapshotGrid,
    average,
    cycle_scores,
    describe,
    fold_selections,
    select,
    teacher_cycles,
)
from fsdlib.settings import InferenceConfig
from fsdlib.spec import ModelSpec
from fsdlib.store import StoreWriter

CYCLES = (1, 2, 3, 4)
PADS = (8, 32)


def _grid(rng: np.random.Generator, truth: np.ndarray, signals: list[list[float]]) -> np.ndarray:
    """A (cycles, pads, clips, C) OOF grid, signals[cycle][pad]."""
    return np.stack([np.stack([noisy_scores(rng, truth, s) for s in row]) for row in signals]).astype(np.float32)


@pytest.fixture
def untrained_first_cycle() -> tuple[np.ndarray, np.ndarray]:
    """Cycle 1 is noise (an untrained early snapshot), cycles 2-4 are trained."""
    rng = np.random.default_rng(0)
    truth = random_truth(rng)
    return _grid(rng, truth, [[0.0, 0.0], [1.5, 1.5], [1.5, 1.5], [1.5, 1.5]]), truth


def test_cv_drops_the_untrained_cycle_and_beats_every_single_cycle(untrained_first_cycle) -> None:
    grid, truth = untrained_first_cycle
    chosen = select(grid, truth, CYCLES, PADS, "cv")
    assert chosen.cycles == (2, 3, 4) and chosen.pads == PADS
    assert chosen.cv == pytest.approx(lwlrap(truth, average(grid, CYCLES, PADS, chosen)), abs=1e-12)
    singles = cycle_scores(grid, truth, CYCLES, PADS)
    assert list(singles) == list(CYCLES) and singles[1] < 0.5 < min(singles[c] for c in (2, 3, 4))
    assert chosen.cv >= max(singles.values())
    every = select(grid, truth, CYCLES, PADS, "fixed")
    assert chosen.cv > every.cv + 0.01


def test_fixed_mode_is_the_mean_over_every_cycle_and_pad(untrained_first_cycle) -> None:
    grid, truth = untrained_first_cycle
    chosen = select(grid, truth, CYCLES, PADS, "fixed")
    assert chosen.cycles == CYCLES and chosen.pads == PADS
    mean = grid.astype(np.float64).mean(axis=(0, 1))
    np.testing.assert_allclose(average(grid, CYCLES, PADS, chosen), mean, rtol=1e-12)
    assert chosen.cv == pytest.approx(lwlrap(truth, mean), abs=1e-12)


def test_cv_chooses_a_subset_of_pads() -> None:
    rng = np.random.default_rng(1)
    truth = random_truth(rng)
    grid = _grid(rng, truth, [[1.5, 1.5, 0.0]] * 3)  # the last pad's predictions are noise at every cycle
    chosen = select(grid, truth, (1, 2, 3), (0, 8, 32), "cv")
    assert chosen.pads == (0, 8) and chosen.cycles == (1, 2, 3)
    one_pad = average(grid, (1, 2, 3), (0, 8, 32), Selection((1, 2, 3), (32,), 0.0))
    np.testing.assert_allclose(one_pad, grid[:, 2].astype(np.float64).mean(axis=0), rtol=1e-12)


def test_ties_go_to_more_cycles_then_more_pads() -> None:
    rng = np.random.default_rng(2)
    truth = random_truth(rng, n=50)
    same = noisy_scores(rng, truth, 1.0).astype(np.float32)
    grid = np.broadcast_to(same, (3, 2, *same.shape))
    assert select(grid, truth, (4, 5, 6), (8, 32), "cv") == Selection((4, 5, 6), (8, 32), lwlrap(truth, same))


def test_clips_without_oof_predictions_are_left_out(untrained_first_cycle) -> None:
    grid, truth = untrained_first_cycle
    with_gap = grid.copy()
    with_gap[:, :, :40] = np.nan  # a fold not trained
    assert select(with_gap, truth, CYCLES, PADS, "cv") == select(grid[:, :, 40:], truth[40:], CYCLES, PADS, "cv")
    assert list(cycle_scores(with_gap, truth, CYCLES, PADS).values()) == list(
        cycle_scores(grid[:, :, 40:], truth[40:], CYCLES, PADS).values())
    with pytest.raises(FsdError, match="no OOF clips"):
        select(np.full_like(grid, np.nan), truth, CYCLES, PADS, "cv")


@pytest.mark.parametrize(
    ("cycles", "pads", "mode", "message"),
    [((1, 2, 3), PADS, "cv", "expected \\(3 cycles, 2 pads"), (CYCLES, (), "cv", "no pads")],
)
def test_select_errors(untrained_first_cycle, cycles: tuple, pads: tuple, mode: str, message: str) -> None:
    grid, truth = untrained_first_cycle
    with pytest.raises(FsdError, match=message):
        select(grid, truth, cycles, pads, mode)
    with pytest.raises(FsdError, match="truth has shape"):
        select(grid, truth[:10], CYCLES, PADS, "cv")
    with pytest.raises(FsdError, match="cycle 7 was not predicted"):
        average(grid, CYCLES, PADS, Selection((7,), PADS, 0.0))


def test_nested_choice_shows_the_selection_bias_of_pure_noise_candidates() -> None:
    """Among 30 × 7 candidates of pure noise, the best looks better than chance; chosen on the other folds and
    scored on the held-out fold, it does not."""
    rng = np.random.default_rng(3)
    truth = random_truth(rng, n=200)
    grid = rng.random((30, 3, *truth.shape)).astype(np.float32)
    cycles, pads = tuple(range(1, 31)), (0, 8, 32)
    folds = np.arange(len(truth)) % 5
    chosen = select(grid, truth, cycles, pads, "cv")
    per_fold = fold_selections(grid, truth, folds, cycles, pads, "cv")
    assert sorted(per_fold) == [0, 1, 2, 3, 4]
    nested = np.zeros(truth.shape)
    for k, fold_choice in per_fold.items():
        assert fold_choice == select(grid[:, :, folds != k], truth[folds != k], cycles, pads, "cv")
        nested[folds == k] = average(grid[:, :, folds == k], cycles, pads, fold_choice)
    chance = select(grid, truth, cycles, pads, "fixed").cv
    assert chosen.cv > chance + 0.03
    assert lwlrap(truth, nested) < chosen.cv - 0.03


def test_fold_selections_needs_two_folds(untrained_first_cycle) -> None:
    grid, truth = untrained_first_cycle
    with pytest.raises(FsdError, match="two folds or more"):
        fold_selections(grid, truth, np.zeros(len(truth), dtype=int), CYCLES, PADS, "cv")
    with pytest.raises(FsdError, match="one fold per OOF clip"):
        fold_selections(grid, truth, np.zeros(3, dtype=int), CYCLES, PADS, "cv")


def test_describe() -> None:
    assert describe((2, 3, 4, 5), (8, 32)) == "cycles 2-5, pads 8, 32"
    assert describe((3,), (0,)) == "cycles 3, pads 0"
    assert describe((1, 3), (0,)) == "cycles 1, 3, pads 0"


def test_snapshot_grid_averages_oof_and_test_alike(untrained_first_cycle) -> None:
    grid, truth = untrained_first_cycle
    test = grid[:, :, :20] * 0.5
    arrays = {"oof": grid, "test": test, "cycles": np.array(CYCLES), "pads": np.array(PADS)}
    snapshots = SnapshotGrid.of(arrays)
    chosen = snapshots.select(truth, "cv")
    oof, test_mean = snapshots.averaged(chosen)
    np.testing.assert_allclose(oof, grid[1:].astype(np.float64).mean(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(test_mean, test[1:].astype(np.float64).mean(axis=(0, 1)), rtol=1e-12)
    assert snapshots.restricted(np.arange(len(truth)) < 50).oof.shape == (4, 2, 50, truth.shape[1])


# The teacher's cycles, from the per-cycle OOF predictions training writes (oof.npz of each fold).

def _teacher_oof(paths: Paths, truth: np.ndarray, folds: np.ndarray, signals: list[float], seed: int = 4) -> None:
    rng = np.random.default_rng(seed)
    for k in sorted(set(folds.tolist())):
        rows = np.flatnonzero(folds == k)
        preds = np.stack([noisy_scores(rng, truth[rows], s) for s in signals]).astype(np.float32)
        paths.fold_dir("A", k).mkdir(parents=True)
        np.savez(paths.fold_dir("A", k) / "oof.npz", fnames=np.array([f"c{i}.wav" for i in rows]), preds=preds,
                 targets=truth[rows])


def _same(a: Selection, b: Selection) -> None:
    """The same choice; its lwlrap equal up to the summation order of clips pooled in another order."""
    assert (a.cycles, a.pads) == (b.cycles, b.pads) and a.cv == pytest.approx(b.cv, abs=1e-12)


def test_teacher_cycles_chosen_on_the_other_folds(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    rng = np.random.default_rng(5)
    truth = random_truth(rng, n=250)
    folds = np.arange(250) % 5
    _teacher_oof(paths, truth, folds, [0.0, 0.0, 1.5, 1.5])  # two untrained early cycles
    chosen = teacher_cycles("A", [0, 1, 2, 3, 4], "cv", paths)
    assert sorted(chosen) == [0, 1, 2, 3, 4]
    assert all(c.cycles == (3, 4) and c.pads == (0,) for c in chosen.values())
    grid = np.full((4, 1, *truth.shape), np.nan, dtype=np.float32)
    for k in range(5):
        with np.load(paths.fold_dir("A", k) / "oof.npz") as z:
            grid[:, 0, folds == k] = z["preds"]
    _same(chosen[2], select(grid[:, :, folds != 2], truth[folds != 2], (1, 2, 3, 4), (0,), "cv"))
    fixed = teacher_cycles("A", [0, 1], "fixed", paths)
    assert set(fixed) == {0, 1} and fixed[0] == fixed[1] and fixed[0].cycles == (1, 2, 3, 4)
    _same(fixed[0], select(grid[:, :, folds < 2], truth[folds < 2], (1, 2, 3, 4), (0,), "fixed"))
    alone = teacher_cycles("A", [3], "cv", paths)  # one fold: chosen on its own OOF
    _same(alone[3], select(grid[:, :, folds == 3], truth[folds == 3], (1, 2, 3, 4), (0,), "cv"))
    with pytest.raises(FsdError, match="train this fold first"):
        teacher_cycles("A", [0, 7], "cv", paths)


def test_teacher_cycles_refuses_folds_with_different_cycle_counts(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    rng = np.random.default_rng(6)
    truth = random_truth(rng, n=40)
    _teacher_oof(paths, truth, np.arange(40) % 2, [1.0, 1.0])
    with np.load(paths.fold_dir("A", 1) / "oof.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(paths.fold_dir("A", 1) / "oof.npz", **{**arrays, "preds": arrays["preds"][:1]})
    with pytest.raises(FsdError, match="different numbers of cycles"):
        teacher_cycles("A", [0, 1], "cv", paths)


# The predictions file: per (cycle, pad), from real (untrained) snapshots of a tiny network.

N_MELS = 16
MODEL_SPEC = ModelSpec(family="resnet", cycles=3, tta_pads=(2, 6),
                 arch={"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "hidden": 16})
EXACT = InferenceConfig(max_batch=1)  # one clip per batch: no group padding, so pads alone change the input


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """Label table, log-mel stores of all subsets, two folds, and three snapshots of fold 0 only."""
    root = tmp_path_factory.mktemp("layout")
    paths = Paths(root)
    dataset = read_dataset(make_root(root / "dataset", n_curated=8, n_noisy=5, n_test=3))
    paths.features.mkdir(parents=True)
    label_table(dataset).to_parquet(paths.labels, index=False)
    rng = np.random.default_rng(7)
    for subset in (dataset.curated, dataset.noisy, dataset.test):
        with StoreWriter(paths.features / f"{subset.name}.logmel.arrow", "logmel", np.float32, N_MELS) as writer:
            writer.write(list(subset.fnames), [rng.random((int(rng.integers(20, 40)), N_MELS), dtype=np.float32) + 0.01
                                               for _ in subset.fnames])
    rows = [{"subset": s.name, "fname": f, "fold": i % 2} for s in (dataset.curated, dataset.noisy)
            for i, f in enumerate(s.fnames)]
    pd.DataFrame(rows).to_parquet(paths.folds, index=False)
    paths.fold_dir("M", 0).mkdir(parents=True)
    for cycle in (1, 2, 3):
        torch.manual_seed(cycle)
        network = build_network(MODEL_SPEC, len(dataset.classes))
        torch.save(network.state_dict(), paths.fold_dir("M", 0) / f"snapshot_{cycle}.pt")
    return paths


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread during the test, then the process's setting again: the tests after it on this pytest-xdist
    worker get the threads the worker was given (conftest.py), not one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_predictions_per_cycle_and_pad(trained: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = replace(MODEL_SPEC, snapshot_cycles=(2, 3))
    loaded = []
    monkeypatch.setattr(predict, "load_snapshot", lambda *args: loaded.append(args[2]) or load_snapshot(*args))
    out = model_predictions("M", spec, [0], EXACT, "cpu", trained)
    assert [p.name for p in loaded] == ["snapshot_2.pt", "snapshot_3.pt"]  # each once, for both clip sets and pads
    n_curated, n_test, n_classes = len(out["curated_fnames"]), len(out["test_fnames"]), len(out["classes"])
    assert out["oof"].shape == (2, 2, n_curated, n_classes) and out["test"].shape == (2, 2, n_test, n_classes)
    assert out["cycles"].tolist() == [2, 3] and out["pads"].tolist() == [2, 6]
    assert out["curated_folds"].tolist() == [0, 1] * 4
    held_out = out["curated_folds"] == 0
    assert np.isfinite(out["oof"][:, :, held_out]).all() and np.isnan(out["oof"][:, :, ~held_out]).all()
    snapshots = snapshot_paths(trained.fold_dir("M", 0), (2, 3))
    _, labels = read_label_table(trained.labels)
    test, _ = open_subset("test", "logmel", labels, trained.features)
    clips = [test[i] for i in range(len(test))]
    today = predict_snapshots(spec, n_classes, snapshots, clips, (2, 6), EXACT, "cpu")
    np.testing.assert_allclose(out["test"].mean(axis=(0, 1)), today, atol=1e-5)
    one = predict_snapshots(spec, n_classes, snapshots[1:], clips, (6,), EXACT, "cpu")
    np.testing.assert_allclose(out["test"][1, 1], one, atol=1e-5)
    assert not np.allclose(out["test"][0], out["test"][1], atol=1e-3)  # the cycles' snapshots differ
    every = model_predictions("M", MODEL_SPEC, [0], EXACT, "cpu", trained)
    assert every["cycles"].tolist() == [1, 2, 3] and every["oof"].shape[:2] == (3, 2)
    no_pads = model_predictions("M", replace(MODEL_SPEC, tta_pads=()), [0], EXACT, "cpu", trained)
    assert no_pads["pads"].tolist() == [0] and no_pads["test"].shape[:2] == (3, 1)


@pytest.mark.usefixtures("one_thread")
def test_teacher_predicts_with_the_chosen_cycles_only(trained: Paths) -> None:
    out = teacher_predictions("M", MODEL_SPEC, [0], InferenceConfig(), "cpu", trained, cycles={0: (2, 3)})
    assert out["cycles_used"].tolist() == [[False, True, True]]
    snapshots = snapshot_paths(trained.fold_dir("M", 0), (2, 3))
    _, labels = read_label_table(trained.labels)
    noisy, _ = open_subset("noisy", "logmel", labels, trained.features)
    expected = predict_snapshots(MODEL_SPEC, out["preds"].shape[2], snapshots, [noisy[i] for i in range(len(noisy))],
                                 (), InferenceConfig(), "cpu")
    np.testing.assert_allclose(out["preds"][0], expected, atol=1e-6)
    every = teacher_predictions("M", MODEL_SPEC, [0], InferenceConfig(), "cpu", trained)
    assert every["cycles_used"].tolist() == [[True, True, True]]
    assert not np.allclose(every["preds"], out["preds"], atol=1e-4)
