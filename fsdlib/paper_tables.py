"""The paper's Tables 1-3 beside ours, every one of our numbers recomputed from the stored predictions.

params/paper_results.yaml lists each row of the paper (its figure, and which model or ensemble, snapshots and pads
reproduce it). Each model's predictions file holds OOF and test predictions per snapshot cycle and TTA pad
(fsdlib/fold_predictions.py), so single-snapshot, snapshot-averaged, padding-TTA and sub-ensemble rows all come
from the files on disk, without retraining. A row whose models were not trained prints "not run".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsdlib.atomic import write_json, write_text
from fsdlib.dataset import read_label_table
from fsdlib.ensemble import weighted_average
from fsdlib.errors import FsdError
from fsdlib.fold_predictions import load_predictions
from fsdlib.metrics import lwlrap
from fsdlib.paths import PATHS, Paths
from fsdlib.selection import Selection, SnapshotGrid
from fsdlib.settings import read_yaml

SNAPSHOTS = ("last", "all")
PADS = ("first", "all")
VARIANTS = (("last", "first", "single snapshot, one pad"), ("all", "first", "snapshots"),
            ("last", "all", "padding TTA"), ("all", "all", "snapshots + padding TTA"))


@dataclass(frozen=True)
class PaperRow:
    """One row: where it is in the paper, the paper's figure (None: none), and what reproduces it."""

    table: str
    row: str
    paper: float | None
    weights: dict[str, float]  # one model (weight 1) or an ensemble's members
    snapshots: str
    pads: str


@dataclass(frozen=True)
class Gain:
    """A gain the paper states: the difference of two rows."""

    gain: str
    row: str
    over: str
    paper: float | None


def read_paper_results(path: Path) -> tuple[list[PaperRow], list[Gain]]:
    """The rows and gains of a paper-results file, validated; errors name the file and the row."""
    doc = read_yaml(path, "paper results file not found")
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise FsdError("expected a mapping with a list `rows`", path)
    rows = [_row(entry, i, path) for i, entry in enumerate(doc["rows"])]
    names = [r.row for r in rows]
    if len(set(names)) != len(names):
        raise FsdError("two rows share a name", path)
    gains = []
    for i, entry in enumerate(doc.get("gains") or []):
        try:
            gain = Gain(str(entry["gain"]), str(entry["row"]), str(entry["over"]), _figure(entry.get("paper")))
        except (KeyError, TypeError, ValueError) as exc:
            raise FsdError(f"gains[{i}]: needs gain, row, over, paper ({exc})", path) from None
        for name in (gain.row, gain.over):
            if name not in names:
                raise FsdError(f"gains[{i}]: no row named {name!r}", path)
        gains.append(gain)
    return rows, gains


def _figure(value: Any) -> float | None:
    return None if value is None else float(value)


def _row(entry: Any, i: int, path: Path) -> PaperRow:
    """One validated row of the file."""
    where = f"rows[{i}]"
    if not isinstance(entry, dict):
        raise FsdError(f"{where}: expected a mapping", path)
    has_model, has_weights = "model" in entry, "weights" in entry
    if has_model == has_weights:
        raise FsdError(f"{where}: give exactly one of `model` and `weights`", path)
    weights = {str(entry["model"]): 1.0} if has_model else entry["weights"]
    if not isinstance(weights, dict) or not weights or any(float(w) <= 0 for w in weights.values()):
        raise FsdError(f"{where}: weights must map models to positive numbers", path)
    snapshots, pads = entry.get("snapshots", "last"), entry.get("pads", "first")
    if snapshots not in SNAPSHOTS or pads not in PADS:
        raise FsdError(f"{where}: snapshots must be one of {SNAPSHOTS}, pads one of {PADS}", path)
    try:
        return PaperRow(str(entry["table"]), str(entry["row"]), _figure(entry.get("paper")),
                        {str(m): float(w) for m, w in weights.items()}, snapshots, pads)
    except (KeyError, TypeError, ValueError) as exc:
        raise FsdError(f"{where}: needs table, row and paper ({exc})", path) from None


def choice(grid: SnapshotGrid, snapshots: str, pads: str) -> Selection:
    """The cycles and pads a row averages: the last cycle or all, the first pad or all."""
    cycles = grid.cycles[-1:] if snapshots == "last" else grid.cycles
    return Selection(cycles, grid.pads[:1] if pads == "first" else grid.pads, float("nan"))


@dataclass(frozen=True)
class Scored:
    """Our CV (pooled out-of-fold lwlrap over the clips every member predicted) and test lwlrap of one row."""

    cv: float | None
    test: float | None
    clips: int


def score_row(weights: dict[str, float], snapshots: str, pads: str, grids: dict[str, SnapshotGrid],
              truth: np.ndarray, test_truth: np.ndarray | None) -> Scored | None:
    """Our figures for one row, None when a member was not run."""
    if any(m not in grids for m in weights):
        return None
    averaged = {m: grids[m].averaged(choice(grids[m], snapshots, pads)) for m in weights}
    known = np.all([np.isfinite(oof).all(axis=1) for oof, _ in averaged.values()], axis=0)
    oof = weighted_average({m: a[0][known] for m, a in averaged.items()}, weights)
    test = weighted_average({m: a[1] for m, a in averaged.items()}, weights)
    cv = lwlrap(truth[known], oof) if known.any() else None
    return Scored(cv, None if test_truth is None else lwlrap(test_truth, test), int(known.sum()))


def paper_tables(rows: Sequence[PaperRow], gains: Sequence[Gain], models: Sequence[str],
                 paths: Paths = PATHS) -> dict[str, Any]:
    """Every row of the paper with ours and the difference, our gains beside the paper's, and each model's four
    variants (single snapshot and pad, + snapshots, + padding TTA, + both). `models`: those with predictions."""
    _, labels = read_label_table(paths.labels)
    preds = load_predictions(list(models), paths) if models else {}
    grids = {m: SnapshotGrid.of(p) for m, p in preds.items()}
    truth, test_truth = labels["curated"].targets, labels["test"].targets
    out_rows = []
    for row in rows:
        scored = score_row(row.weights, row.snapshots, row.pads, grids, truth, test_truth)
        out_rows.append({"table": row.table, "row": row.row, "paper": row.paper, "members": row.weights,
                         "snapshots": row.snapshots, "pads": row.pads,
                         "cv": None if scored is None else scored.cv,
                         "test": None if scored is None else scored.test,
                         "diff": None if scored is None or row.paper is None or scored.cv is None
                         else scored.cv - row.paper,
                         "clips": None if scored is None else scored.clips})
    by_name = {r["row"]: r for r in out_rows}
    out_gains = []
    for gain in gains:
        a, b = by_name[gain.row]["cv"], by_name[gain.over]["cv"]
        out_gains.append({"gain": gain.gain, "row": gain.row, "over": gain.over, "paper": gain.paper,
                          "ours": None if a is None or b is None else a - b})
    variants = {m: {label: _scores(score_row({m: 1.0}, s, p, grids, truth, test_truth))
                    for s, p, label in VARIANTS} for m in grids}
    best = {m: best_epoch_cv(p, truth) for m, p in preds.items() if "best_oof" in p}
    for r in out_rows:  # the paper's reading of a single model's CV: each fold's best epoch, pooled
        member = next(iter(r["members"]))
        r["best_epoch_cv"] = best.get(member) if len(r["members"]) == 1 and r["snapshots"] == "last" else None
    return {"cv": "pooled out-of-fold lwlrap of the curated clips every member predicted",
            "rows": out_rows, "gains": out_gains, "variants": variants}


def best_epoch_cv(arrays: dict[str, np.ndarray], truth: np.ndarray) -> float | None:
    """Pooled lwlrap of each fold's best-epoch predictions of its held-out clips (models validated every epoch)."""
    known = np.isfinite(arrays["best_oof"]).all(axis=1)
    return lwlrap(truth[known], arrays["best_oof"][known]) if known.any() else None


def _scores(scored: Scored | None) -> dict[str, float | None]:
    return {"cv": None if scored is None else scored.cv, "test": None if scored is None else scored.test}


def render(tables: dict[str, Any]) -> str:
    """The tables as Markdown: paper, ours, difference per row; the gains; each model's variants."""
    def num(v: float | None, signed: bool = False) -> str:
        return "not run" if v is None else (f"{v:+.3f}" if signed else f"{v:.3f}")

    lines = ["# The paper's Tables 1-3 beside ours", "",
             "Ours: CV is the pooled out-of-fold lwlrap of the curated clips (every fold's validation clips predicted by",
             "that fold's networks, full-length clips); \"last\" is the last snapshot cycle (the paper's single-crop",
             "CV: one network per fold at the end of training), \"all\" every snapshot cycle the model predicts;",
             "\"first\" the first padding-TTA pad, \"all\" every pad. Test: lwlrap on the labelled test clips.",
             "Paper figures: params/paper_results.yaml. Computed from data/predictions/*.npz by `fsd report`."]
    with_best = any(r.get("best_epoch_cv") is not None for r in tables["rows"])
    if with_best:
        lines += ["\"best epoch\" is the paper's reading of a single model's CV: each fold's validation lwlrap at its",
                  "best epoch (models with `validate_every: epoch`), the folds' predictions pooled; \"our CV\" is the",
                  "last snapshot's, what the ensemble uses."]
    lines.append("")
    best_head, best_rule = (" our CV, best epoch |", "---|") if with_best else ("", "")
    for table in dict.fromkeys(r["table"] for r in tables["rows"]):
        title = "Loop padding (docs/method.md §9)" if table == "9.2" else f"Table {table}"
        lines += [f"## {title}", "", "| row | members | snapshots | pads | paper CV | our CV | difference | our test |"
                  + best_head, "|---|---|---|---|---|---|---|---|" + best_rule]
        for r in (r for r in tables["rows"] if r["table"] == table):
            members = ", ".join(f"{m}:{w:g}" for m, w in r["members"].items()) if len(r["members"]) > 1 \
                else next(iter(r["members"]))
            paper = "-" if r["paper"] is None else f"{r['paper']:.3f}"
            diff = "-" if r["paper"] is None or r["cv"] is None else num(r["diff"], signed=True)
            test = "-" if r["cv"] is not None and r["test"] is None else num(r["test"])
            best = (" - |" if r.get("best_epoch_cv") is None else f" {num(r['best_epoch_cv'])} |") if with_best else ""
            lines.append(f"| {r['row']} | {members} | {r['snapshots']} | {r['pads']} | {paper} | {num(r['cv'])} "
                         f"| {diff} | {test} |" + best)
        lines.append("")
    lines += ["## Gains", "", "| gain | row | over | paper | ours |", "|---|---|---|---|---|"]
    for g in tables["gains"]:
        paper = "-" if g["paper"] is None else f"{g['paper']:+.3f}"
        lines.append(f"| {g['gain']} | {g['row']} | {g['over']} | {paper} | {num(g['ours'], signed=True)} |")
    lines += ["", "## Each model: snapshots and padding TTA (CV / test)", "",
              "| model | " + " | ".join(label for _, _, label in VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
    for model, by_variant in tables["variants"].items():
        cells = [f"{num(v['cv'])} / {'-' if v['test'] is None else num(v['test'])}" for v in by_variant.values()]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_paper_tables(results: Path, models: Sequence[str], paths: Paths = PATHS) -> dict[str, Any]:
    """Compute the tables from the predictions of `models` (every model the params predict; a row needing another
    prints "not run") and write metrics/paper_tables.md and its JSON twin; return the tables."""
    rows, gains = read_paper_results(results)
    tables = paper_tables(rows, gains, models, paths)
    write_json(paths.metrics / "paper_tables.json", tables)
    write_text(paths.metrics / "paper_tables.md", render(tables))
    return tables
