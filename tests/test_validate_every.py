"""Validation every epoch (`validate_every: epoch`) and Table 1 read the paper's way (docs/method.md §15): each fold's
best epoch kept by training, carried by the predict stage, pooled by the report beside the last snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import noisy_scores
from test_paper_tables import results_file, write_store
from test_train import _run, _spec, data  # noqa: F401  (data: the fixture)

from fsdlib.batches import FoldData
from fsdlib.errors import FsdError
from fsdlib.fold_predictions import best_epoch_oof, write_arrays
from fsdlib.metrics import lwlrap
from fsdlib.paper_tables import write_paper_tables
from fsdlib.paths import Paths
from fsdlib.spec import ModelSpec


def test_every_epoch_is_validated_without_changing_training(data: FoldData, tmp_path: Path) -> None:  # noqa: F811
    """2 cycles x 3 epochs: six validation scores, the best one's predictions kept; the weights and the cycle
    validations are those of validating once per cycle."""
    per_cycle = _run(_spec(), data, tmp_path / "cycle")
    per_epoch = _run(_spec(validate_every="epoch"), data, tmp_path / "epoch")
    for c in (1, 2):
        a = torch.load(tmp_path / "cycle" / "out" / f"snapshot_{c}.pt")
        b = torch.load(tmp_path / "epoch" / "out" / f"snapshot_{c}.pt")
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert per_epoch.cycle_lwlrap == per_cycle.cycle_lwlrap
    tsv = tmp_path / "epoch" / "out" / "live" / "plots" / "metrics" / "val" / "lwlrap.tsv"
    scores = [float(line.split("\t")[-1]) for line in tsv.read_text().splitlines()[1:]]
    assert len(scores) == 6 and [scores[2], scores[5]] == pytest.approx(per_cycle.cycle_lwlrap)
    metrics = json.loads((tmp_path / "epoch" / "out" / "metrics.json").read_text())
    best = int(np.argmax(scores))
    assert metrics["best_epoch"] == best + 1 and metrics["best_epoch_lwlrap"] == pytest.approx(scores[best])
    with np.load(tmp_path / "epoch" / "out" / "oof.npz") as z:
        assert int(z["best_epoch"]) == best + 1 and str(z["validate_every"]) == "epoch"
        assert lwlrap(z["targets"], z["best_preds"]) == pytest.approx(scores[best])
        if best in (2, 5):  # a cycle's last epoch: the same predictions as that cycle's OOF
            np.testing.assert_array_equal(z["best_preds"], z["preds"][best // 3])
    assert "best_epoch" not in json.loads((tmp_path / "cycle" / "out" / "metrics.json").read_text())


def test_validate_every_is_checked() -> None:
    with pytest.raises(FsdError, match="validate_every must be cycle or epoch"):
        ModelSpec(family="resnet", validate_every="step")


def _fold_oof(paths: Paths, fold: int, fnames: list[str], best: np.ndarray | None, epoch: int = 3) -> None:
    extra = {} if best is None else {"best_preds": best, "best_epoch": epoch}
    out = paths.fold_dir("A", fold)
    out.mkdir(parents=True, exist_ok=True)
    write_arrays(out / "oof.npz", {"fnames": np.array(fnames), "preds": np.zeros((1, len(fnames), 2)),
                                   "validate_every": np.array("epoch"), **extra})


def test_best_epoch_predictions_are_placed_by_clip_name(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    fnames = ["a.wav", "b.wav", "c.wav", "d.wav"]
    _fold_oof(paths, 0, ["c.wav", "a.wav"], np.array([[0.3, 0.3], [0.1, 0.1]], np.float32), epoch=4)
    _fold_oof(paths, 1, ["d.wav"], np.array([[0.4, 0.4]], np.float32), epoch=7)
    out = best_epoch_oof("A", [0, 1], fnames, 2, paths)
    np.testing.assert_array_equal(out["best_oof"][[0, 2, 3], 0], np.float32([0.1, 0.3, 0.4]))
    assert np.isnan(out["best_oof"][1]).all() and out["best_epochs"].tolist() == [4, 7]
    _fold_oof(paths, 1, ["d.wav"], None)
    with pytest.raises(FsdError, match="no best-epoch predictions"):
        best_epoch_oof("A", [0, 1], fnames, 2, paths)


def test_report_gives_table_1_both_ways(tmp_path: Path) -> None:
    """A single-model last-snapshot row gets the pooled best-epoch CV beside ours; other rows and models without
    best-epoch predictions get none; without any, the column is absent."""
    paths = Paths(tmp_path)
    truth, _, _ = write_store(paths, {"A": (3, 2), "C": (2, 1)})
    results = results_file(tmp_path / "results.yaml")
    plain = (write_paper_tables(results, ["A", "C"], paths), (paths.metrics / "paper_tables.md").read_text())
    assert "best epoch" not in plain[1] and all(r["best_epoch_cv"] is None for r in plain[0]["rows"])
    with np.load(paths.predictions_of("A")) as z:
        arrays = {k: z[k] for k in z.files}
    best = noisy_scores(np.random.default_rng(9), truth, 1.5).astype(np.float32)
    best[:5] = np.nan  # a fold not listed
    write_arrays(paths.predictions_of("A"), {**arrays, "best_oof": best, "best_epochs": np.array([3, 5])})
    tables = write_paper_tables(results, ["A", "C"], paths)
    rows = {r["row"]: r for r in tables["rows"]}
    assert rows["A single"]["best_epoch_cv"] == pytest.approx(lwlrap(truth[5:], best[5:]))
    assert rows["A single"]["best_epoch_cv"] != pytest.approx(rows["A single"]["cv"])
    assert rows["A both"]["best_epoch_cv"] is None and rows["A + C"]["best_epoch_cv"] is None
    text = (paths.metrics / "paper_tables.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("| A single |"))
    assert line.endswith(f" {rows['A single']['best_epoch_cv']:.3f} |") and "our CV, best epoch" in text
