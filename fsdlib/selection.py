"""Choosing, per model, the snapshot cycles and padding-TTA pads to average, by out-of-fold (OOF) lwlrap.

The authors kept, per model, the cycles whose CV was good (docs/method.md §7, §11): the early cycles of a short run
can be untrained, and their near-uniform scores averaged with trained ones ruin the model's ranking. Mode "fixed"
averages every cycle and pad given; mode "cv" chooses the contiguous cycle range and the non-empty pad subset whose
mean scores best on the OOF clips. A choice scored on the clips it was made on is optimistic: `fold_selections`
makes it for each fold on the other folds only, the basis of an honest (nested) estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from fsdlib.errors import FsdError
from fsdlib.metrics import lwlrap
from fsdlib.paths import PATHS, Paths


@dataclass(frozen=True)
class Selection:
    """The snapshot cycles and pads averaged, and the lwlrap of their mean on the OOF clips they were chosen on."""

    cycles: tuple[int, ...]
    pads: tuple[int, ...]
    cv: float


@dataclass(frozen=True)
class SnapshotGrid:
    """One model's predictions per snapshot cycle and TTA pad, as the predict stage writes them: OOF of the curated
    clips (cycles, pads, clips, C), NaN rows for folds not trained, and test (cycles, pads, test clips, C)."""

    oof: np.ndarray
    test: np.ndarray
    cycles: tuple[int, ...]
    pads: tuple[int, ...]

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray]) -> SnapshotGrid:
        """The grid of a predictions file's arrays (fsdlib/fold_predictions.py)."""
        return cls(arrays["oof"], arrays["test"], tuple(int(c) for c in arrays["cycles"]),
                   tuple(int(p) for p in arrays["pads"]))

    def restricted(self, rows: np.ndarray) -> SnapshotGrid:
        """The same grid with only the OOF clips `rows` selects."""
        return SnapshotGrid(self.oof[:, :, rows], self.test, self.cycles, self.pads)

    def select(self, truth: np.ndarray, mode: str) -> Selection:
        """`select` on this grid's OOF predictions."""
        return select(self.oof, truth, self.cycles, self.pads, mode)

    def averaged(self, chosen: Selection) -> tuple[np.ndarray, np.ndarray]:
        """The OOF and the test predictions averaged over the chosen cycles and pads."""
        return average(self.oof, self.cycles, self.pads, chosen), average(self.test, self.cycles, self.pads, chosen)


def average(grid: np.ndarray, cycles: Sequence[int], pads: Sequence[int], chosen: Selection) -> np.ndarray:
    """Mean of a (cycles, pads, clips, C) prediction grid over the chosen cycles and pads: (clips, C), float64."""
    cycle_idx = [_position(cycles, c, "cycle") for c in chosen.cycles]
    pad_idx = [_position(pads, p, "pad") for p in chosen.pads]
    return _mean(np.asarray(grid), cycle_idx, pad_idx)


def select(oof: np.ndarray, truth: np.ndarray, cycles: Sequence[int], pads: Sequence[int], mode: str) -> Selection:
    """The cycles and pads a model averages, chosen on its (cycles, pads, clips, C) OOF grid against `truth`.

    "fixed": all of them. "cv": the contiguous cycle range and non-empty pad subset whose mean has the best
    lwlrap, ties going to more cycles, then more pads; every single cycle is a candidate, so the choice scores at
    least as well as the best one. Clips without OOF predictions (NaN: folds not trained) are left out.
    Candidates: n_cycles (n_cycles + 1) / 2 ranges × (2^n_pads - 1) pad subsets.
    """
    oof, truth, cycles, pads = _checked(oof, truth, cycles, pads)
    known = np.isfinite(oof).all(axis=(0, 1, 3))
    if not known.any():
        raise FsdError("no OOF clips with predictions to choose snapshot cycles and pads on")
    oof, truth = oof[:, :, known], truth[known]
    if mode == "fixed":
        return Selection(cycles, pads, lwlrap(truth, _mean(oof, range(len(cycles)), range(len(pads)))))
    candidates = (Selection(cycles[first : last + 1], tuple(pads[j] for j in pad_idx),
                            lwlrap(truth, _mean(oof, range(first, last + 1), pad_idx)))
                  for size in range(1, len(pads) + 1) for pad_idx in combinations(range(len(pads)), size)
                  for first in range(len(cycles)) for last in range(first, len(cycles)))
    return max(candidates, key=lambda s: (round(s.cv, 12), len(s.cycles), len(s.pads)))  # the first of equals


def fold_selections(oof: np.ndarray, truth: np.ndarray, folds: np.ndarray, cycles: Sequence[int],
                    pads: Sequence[int], mode: str) -> dict[int, Selection]:
    """For each fold with OOF clips, the choice `select` makes on the OOF clips of the other folds only."""
    oof, truth, cycles, pads = _checked(oof, truth, cycles, pads)
    folds = np.asarray(folds)
    if folds.shape != (oof.shape[2],):
        raise FsdError(f"folds has shape {folds.shape}, expected ({oof.shape[2]},): one fold per OOF clip")
    present = sorted(set(folds[np.isfinite(oof).all(axis=(0, 1, 3))].tolist()))
    if len(present) < 2:
        raise FsdError(f"choosing on the other folds needs OOF clips of two folds or more, have folds {present}")
    return {k: select(oof[:, :, folds != k], truth[folds != k], cycles, pads, mode) for k in present}


def cycle_scores(oof: np.ndarray, truth: np.ndarray, cycles: Sequence[int], pads: Sequence[int]) -> dict[int, float]:
    """OOF lwlrap of each cycle alone (mean over all pads), on the clips with OOF predictions."""
    oof, truth, cycles, pads = _checked(oof, truth, cycles, pads)
    known = np.isfinite(oof).all(axis=(0, 1, 3))
    return {c: lwlrap(truth[known], _mean(oof[:, :, known], [i], range(len(pads)))) for i, c in enumerate(cycles)}


def teacher_oof(name: str, folds: Sequence[int], paths: Paths = PATHS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's training OOF of the listed folds, pooled: a (cycles, 1 pad, clips, C) grid at pad 0, the clips'
    targets and folds. Training writes one prediction per cycle of the held-out clips (oof.npz of each fold)."""
    grids, targets, fold_of = [], [], []
    for k in folds:
        path = paths.fold_dir(name, k) / "oof.npz"
        if not path.is_file():
            raise FsdError("training OOF predictions not found (train this fold first)", path)
        with np.load(path) as z:
            grids.append(z["preds"][:, None])
            targets.append(z["targets"])
        fold_of.append(np.full(len(targets[-1]), k))
    n_cycles = {g.shape[0] for g in grids}
    if len(n_cycles) != 1:
        raise FsdError(f"teacher {name}'s folds trained different numbers of cycles ({sorted(n_cycles)}); retrain")
    return np.concatenate(grids, axis=2), np.concatenate(targets), np.concatenate(fold_of)


def teacher_cycles(name: str, folds: Sequence[int], mode: str, paths: Paths = PATHS) -> dict[int, Selection]:
    """The snapshot cycles each teacher fold averages on the noisy clips, chosen on the teacher's training OOF.

    In mode "cv", fold k's cycles are chosen on the OOF clips of the other folds, so that a leak-free student of
    fold k is taught without its validation clips' labels (docs/method.md §6); with one fold, on its own OOF.
    """
    oof, truth, fold_of = teacher_oof(name, folds, paths)
    cycles = tuple(range(1, oof.shape[0] + 1))
    if mode == "cv" and len(set(folds)) > 1:
        return fold_selections(oof, truth, fold_of, cycles, (0,), mode)
    chosen = select(oof, truth, cycles, (0,), mode)
    return dict.fromkeys(folds, chosen)


def describe(cycles: Sequence[int], pads: Sequence[int]) -> str:
    """"cycles 2-5, pads 8, 32": a contiguous cycle range written as first-last."""
    c = list(cycles)
    text = f"{c[0]}-{c[-1]}" if len(c) > 1 and c == list(range(c[0], c[-1] + 1)) else ", ".join(map(str, c))
    return f"cycles {text}, pads {', '.join(map(str, pads))}"


def _mean(grid: np.ndarray, cycle_idx: Sequence[int], pad_idx: Sequence[int]) -> np.ndarray:
    return grid[np.ix_(list(cycle_idx), list(pad_idx))].mean(axis=(0, 1), dtype=np.float64)


def _position(values: Sequence[int], value: int, what: str) -> int:
    if value not in values:
        raise FsdError(f"{what} {value} was not predicted (have {list(values)})")
    return list(values).index(value)


def _checked(oof: np.ndarray, truth: np.ndarray, cycles: Sequence[int],
             pads: Sequence[int]) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], tuple[int, ...]]:
    """The grid and truth as arrays, cycles and pads as int tuples; FsdError unless their shapes agree."""
    oof, truth = np.asarray(oof), np.asarray(truth)
    cycles, pads = tuple(int(c) for c in cycles), tuple(int(p) for p in pads)
    if not cycles or not pads:
        raise FsdError(f"no snapshot cycles ({list(cycles)}) or no pads ({list(pads)}) to choose from")
    if oof.ndim != 4 or oof.shape[:2] != (len(cycles), len(pads)):
        raise FsdError(f"OOF grid has shape {oof.shape}, expected ({len(cycles)} cycles, {len(pads)} pads, clips, C)")
    if truth.shape != oof.shape[2:]:
        raise FsdError(f"truth has shape {truth.shape}, OOF predictions have {oof.shape[2:]}")
    return oof, truth, cycles, pads
