"""The paper's tables beside ours: every row of params/paper_results.yaml is reported, ours recomputed from the
predictions on disk (checked against an independent computation here), rows of untrained models "not run"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import noisy_scores, random_truth

from fsdlib.errors import FsdError
from fsdlib.fold_predictions import write_arrays
from fsdlib.metrics import lwlrap
from fsdlib.paper_tables import read_paper_results, render, write_paper_tables
from fsdlib.paths import Paths

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "params" / "paper_results.yaml"
N_CUR, N_TEST, C = 60, 30, 6


def write_store(paths: Paths, models: dict[str, tuple[int, int]], seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Labels and a predictions file per model ((cycles, pads) each) under `paths`; returns truths and grids."""
    rng = np.random.default_rng(seed)
    truth, test_truth = random_truth(rng, N_CUR, C), random_truth(rng, N_TEST, C)
    classes = [f"c{i}" for i in range(C)]
    frames = []
    for subset, t in (("curated", truth), ("test", test_truth)):
        part = pd.DataFrame(t, columns=classes)
        part.insert(0, "usage", "Private" if subset == "test" else "")
        part.insert(0, "fname", [f"{subset}{i}.wav" for i in range(len(t))])
        part.insert(0, "subset", subset)
        frames.append(part)
    paths.features.mkdir(parents=True)
    pd.concat(frames, ignore_index=True).to_parquet(paths.labels, index=False)
    grids = {}
    for name, (n_cycles, n_pads) in models.items():
        oof = np.stack([np.stack([noisy_scores(rng, truth, 0.5 + 0.3 * c) for _ in range(n_pads)])
                        for c in range(n_cycles)]).astype(np.float32)
        test = np.stack([np.stack([noisy_scores(rng, test_truth, 0.5 + 0.3 * c) for _ in range(n_pads)])
                         for c in range(n_cycles)])
        grids[name] = (oof, test)
        write_arrays(paths.predictions_of(name), {
            "test_fnames": np.array([f"test{i}.wav" for i in range(N_TEST)]),
            "curated_fnames": np.array([f"curated{i}.wav" for i in range(N_CUR)]),
            "curated_folds": np.arange(N_CUR) % 3, "oof": oof, "test": test,
            "cycles": np.arange(1, n_cycles + 1), "pads": np.array([8, 32][:n_pads]), "classes": np.array(classes)})
    return truth, test_truth, grids


def results_file(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "rows": [{"table": "1", "row": "A single", "paper": 0.849, "model": "A", "snapshots": "last", "pads": "first"},
                 {"table": "1", "row": "A both", "paper": 0.868, "model": "A", "snapshots": "all", "pads": "all"},
                 {"table": "3", "row": "A + C", "paper": 0.876, "weights": {"A": 3, "C": 1}, "snapshots": "all",
                  "pads": "first"},
                 {"table": "2", "row": "D", "paper": 0.814, "model": "D"}],
        "gains": [{"gain": "averaging", "row": "A + C", "over": "A both", "paper": 0.008}]}))
    return path


def test_rows_are_recomputed_from_the_predictions(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    truth, test_truth, grids = write_store(paths, {"A": (3, 2), "C": (2, 1)})
    tables = write_paper_tables(results_file(tmp_path / "results.yaml"), ["A", "C"], paths)
    rows = {r["row"]: r for r in tables["rows"]}
    a_oof, a_test = grids["A"]
    c_oof, c_test = grids["C"]
    assert rows["A single"]["cv"] == pytest.approx(lwlrap(truth, a_oof[-1, 0]))
    assert rows["A single"]["test"] == pytest.approx(lwlrap(test_truth, a_test[-1, 0]))
    assert rows["A both"]["cv"] == pytest.approx(lwlrap(truth, a_oof.mean(axis=(0, 1))))
    ensemble = 0.75 * a_oof[:, 0].mean(axis=0) + 0.25 * c_oof[:, 0].mean(axis=0)
    assert rows["A + C"]["cv"] == pytest.approx(lwlrap(truth, ensemble))
    assert rows["A single"]["diff"] == pytest.approx(rows["A single"]["cv"] - 0.849)
    assert rows["D"]["cv"] is None and rows["D"]["diff"] is None  # D has no predictions: not run
    assert tables["gains"][0]["ours"] == pytest.approx(rows["A + C"]["cv"] - rows["A both"]["cv"])
    assert tables["variants"]["A"]["padding TTA"]["cv"] == pytest.approx(lwlrap(truth, a_oof[-1].mean(axis=0)))
    text = (paths.metrics / "paper_tables.md").read_text()
    assert all(name in text for name in rows) and "not run" in text
    assert (paths.metrics / "paper_tables.json").is_file()


def test_clips_without_oof_predictions_are_left_out(tmp_path: Path) -> None:
    """A folds.ids subset leaves NaN OOF rows: a row scores the clips all its members predicted."""
    paths = Paths(tmp_path)
    truth, _, grids = write_store(paths, {"A": (1, 1)})
    with np.load(paths.predictions_of("A")) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["oof"][:, :, :20] = np.nan
    write_arrays(paths.predictions_of("A"), arrays)
    tables = write_paper_tables(results_file(tmp_path / "results.yaml"), ["A"], paths)
    row = next(r for r in tables["rows"] if r["row"] == "A single")
    assert row["clips"] == N_CUR - 20
    assert row["cv"] == pytest.approx(lwlrap(truth[20:], grids["A"][0][0, 0, 20:]))


def test_a_listed_model_without_predictions_is_an_error(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    write_store(paths, {"A": (1, 1)})
    with pytest.raises(FsdError, match="predictions of model C not found"):
        write_paper_tables(results_file(tmp_path / "results.yaml"), ["A", "C"], paths)


@pytest.mark.parametrize("bad, words", [
    ({"rows": [{"table": "1", "row": "x", "paper": 0.8}]}, "exactly one of `model` and `weights`"),
    ({"rows": [{"table": "1", "row": "x", "paper": 0.8, "model": "A", "pads": "some"}]}, "pads one of"),
    ({"rows": [{"table": "1", "row": "x", "paper": 0.8, "weights": {"A": 0}}]}, "positive numbers"),
    ({"rows": [{"table": "1", "row": "x", "paper": 0.8, "model": "A"}],
      "gains": [{"gain": "g", "row": "x", "over": "y", "paper": 0.1}]}, "no row named 'y'"),
    ({"rows": "x"}, "a list `rows`"),
])
def test_bad_results_file_names_the_problem(tmp_path: Path, bad: dict, words: str) -> None:
    path = tmp_path / "results.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(FsdError, match=words) as err:
        read_paper_results(path)
    assert str(path) in str(err.value)


def test_the_paper_file_covers_tables_1_to_3_and_the_models_in_params() -> None:
    """Every row of the paper (docs/method.md §7) is in the file once, and every model it names is trained at paper
    scale, so `dvc repro` computes every row there (the demo leaves some in `more_models`: rows "not run")."""
    rows, gains = read_paper_results(RESULTS)
    figures = sorted(r.paper for r in rows if r.paper is not None)
    assert figures == sorted([0.724, 0.829, 0.829, 0.849, 0.868, 0.870, 0.858, 0.886, 0.840, 0.862, 0.809, 0.814,
                              0.815, 0.818, 0.818, 0.820, 0.820, 0.876, 0.890, 0.836, 0.896, 0.895])
    assert {g.paper for g in gains} >= {0.020, 0.021, 0.008}
    paper, demo = (yaml.safe_load((ROOT / name).read_text()) for name in ("params/paper.yaml", "params.yaml"))
    assert {m for r in rows for m in r.weights} <= set(paper["stage_models"]["predict"])
    assert {m for r in rows for m in r.weights} <= demo["models"].keys() | demo["more_models"].keys()
    assert {r.table for r in rows} == {"1", "2", "3", "9.2"}


def test_render_marks_rows_without_a_paper_figure() -> None:
    tables = {"rows": [{"table": "9.2", "row": "loop", "paper": None, "members": {"A_loop": 1.0}, "snapshots": "all",
                        "pads": "all", "cv": 0.5, "test": None, "diff": None, "clips": 3}],
              "gains": [], "variants": {}}
    text = render(tables)
    assert "| loop | A_loop | all | all | - | 0.500 | - | - |" in text
