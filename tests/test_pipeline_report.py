"""The report and export stages of the tiny pipeline: the paper's tables with every row of
params/paper_results.yaml and ours recomputed here from data/predictions/*.npz (test_pipeline.py checks that a
model change reruns only the rows that involve it); the exported tagger file scores every test clip, alone, as its
submission row."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from pipeline import ABLATIONS

from fsdlib.dataset import read_label_table
from fsdlib.metrics import lwlrap
from fsdlib.onnx_tagger import load_onnx_tagger
from fsdlib.paths import Paths
from fsdlib.tagger import load_tagger

pytestmark = pytest.mark.slow
RESULTS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params" / "paper_results.yaml").read_text())


def _tables(repo: Path) -> dict:
    return json.loads((repo / "metrics" / "paper_tables.json").read_text())


def _averaged(repo: Path, model: str, snapshots: str, pads: str) -> tuple[np.ndarray, np.ndarray]:
    """A model's OOF and test predictions over its last or all cycles and its first or all pads, from the file."""
    with np.load(Paths(repo).predictions_of(model)) as z:
        oof, test = z["oof"].astype(np.float64), z["test"].astype(np.float64)
    cycles = slice(-1, None) if snapshots == "last" else slice(None)
    chosen_pads = slice(0, 1) if pads == "first" else slice(None)
    return oof[cycles, chosen_pads].mean(axis=(0, 1)), test[cycles, chosen_pads].mean(axis=(0, 1))


def test_every_paper_row_is_reported_and_recomputed(tiny_pipeline: Path) -> None:
    tables = _tables(tiny_pipeline)
    assert [r["row"] for r in tables["rows"]] == [r["row"] for r in RESULTS["rows"]]
    assert [r["paper"] for r in tables["rows"]] == [r["paper"] for r in RESULTS["rows"]]
    _, labels = read_label_table(Paths(tiny_pipeline).labels)
    truth, test_truth = labels["curated"].targets, labels["test"].targets
    for spec, ours in zip(RESULTS["rows"], tables["rows"], strict=True):
        weights = spec.get("weights") or {spec["model"]: 1}
        if any(m in ABLATIONS for m in weights):
            assert ours["cv"] is None and ours["test"] is None, spec["row"]  # not trained by the tiny params
            continue
        parts = {m: _averaged(tiny_pipeline, m, spec.get("snapshots", "last"), spec.get("pads", "first"))
                 for m in weights}
        total = sum(weights.values())
        oof = sum(w * parts[m][0] for m, w in weights.items()) / total
        test = sum(w * parts[m][1] for m, w in weights.items()) / total
        assert ours["cv"] == pytest.approx(lwlrap(truth, oof), abs=1e-9), spec["row"]
        assert ours["test"] == pytest.approx(lwlrap(test_truth, test), abs=1e-9), spec["row"]
        if spec["paper"] is not None:
            assert ours["diff"] == pytest.approx(ours["cv"] - spec["paper"])
    markdown = (tiny_pipeline / "metrics" / "paper_tables.md").read_text()
    assert all(r["row"] in markdown for r in RESULTS["rows"]) and "not run" in markdown


def test_exported_tagger_scores_a_test_clip_as_its_submission_row(tiny_pipeline: Path) -> None:
    paths = Paths(tiny_pipeline)
    payload = torch.load(paths.tagger, weights_only=True)
    submitted = json.loads(paths.ensemble_weights.read_text())
    weights = submitted[submitted["submit"]]
    assert {m["name"] for m in payload["members"]} == {m for m, w in weights.items() if w > 0}
    submission = pd.read_csv(paths.submission, index_col="fname")
    tagger = load_tagger(paths.tagger, device="cpu")
    for clip in submission.index:  # each clip alone: in the predict stage it was batched with clips of its length
        scores = tagger.scores([tiny_pipeline / "data/demo/test" / clip])
        np.testing.assert_allclose(scores.iloc[0].to_numpy(), submission.loc[clip].to_numpy(), atol=1e-5, err_msg=clip)


def test_exported_onnx_graph_scores_the_test_clips_as_the_submission(tiny_pipeline: Path) -> None:
    """data/tagger.onnx (weights in data/tagger.onnx.data) on onnxruntime: the same members as the torch file, and
    every test clip's submission row within 1e-4."""
    paths = Paths(tiny_pipeline)
    tagger = load_onnx_tagger(paths.tagger_onnx)
    assert [m["name"] for m in tagger.members] == [m["name"] for m in torch.load(paths.tagger,
                                                                                  weights_only=True)["members"]]
    assert Path(f"{paths.tagger_onnx}.data").is_file()
    submission = pd.read_csv(paths.submission, index_col="fname")
    scores = tagger.scores([tiny_pipeline / "data/demo/test" / clip for clip in submission.index])
    np.testing.assert_allclose(scores.to_numpy(), submission.to_numpy(), atol=1e-4)
