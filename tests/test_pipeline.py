"""End to end: the real DVC pipeline on a tiny generated dataset, in a temporary copy of the repository. Every test
sets up what it needs itself: it reads the session's tiny pipeline (conftest.py) or changes a copy of its own."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ACCEPTED, accepted_wavs, refused_wavs
from pipeline import copy_repo, make_repo, repro, run

from fsdlib.paths import Paths

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(tiny_pipeline: Path, tmp_path: Path) -> Path:
    """A copy of the session's tiny pipeline, for this test alone to change (and to run DVC in)."""
    return copy_repo(tiny_pipeline, tmp_path / "repo")


def test_pipeline_outputs(repo: Path) -> None:
    paths = Paths(repo)
    assert (paths.demo / "train_curated.csv").is_file()
    for subset in ("curated", "noisy", "test"):
        assert (paths.features / f"{subset}.logmel.arrow").is_file()
        assert (paths.features / f"{subset}.wave.arrow").is_file()
    folds = pd.read_parquet(paths.folds)
    assert set(folds["subset"]) == {"curated", "noisy"} and set(folds["fold"]) == {0, 1}
    for model in ("A", "A_crops", "B", "B_leak_free", "C", "pre", "D", "E", "F"):
        for fold in (0, 1):
            out = paths.fold_dir(model, fold)
            assert (out / "snapshot_1.pt").is_file() and (out / "oof.npz").is_file()
            assert "cycle_lwlrap" in json.loads((out / "metrics.json").read_text())
    with np.load(paths.predictions_of("A")) as z:
        n_curated, n_test = len(z["curated_fnames"]), len(z["test_fnames"])
        assert z["oof"].shape == (2, 1, n_curated, 4) and z["test"].shape == (2, 1, n_test, 4)
        assert z["cycles"].tolist() == [1, 2] and z["pads"].tolist() == [4] and np.isfinite(z["oof"]).all()
    with np.load(paths.teacher) as z:
        assert z["cycles_used"].shape == (2, 2) and z["cycles_used"].any(axis=1).all()
    metrics = json.loads((paths.metrics / "metrics.json").read_text())
    assert {"A", "B", "B_leak_free", "ensemble_fixed", "ensemble_fitted"} <= set(metrics["cv"])
    assert set(metrics["cv_nested"]) == {"ensemble_fixed", "ensemble_fitted"}
    selection = json.loads((paths.metrics / "selection.json").read_text())
    chosen = selection["models"]["A"]
    assert set(chosen["cycles"]) <= {1, 2} and chosen["pads"] == [4]
    assert selection["select"] == "fixed" or chosen["cv"] >= chosen["cv_best_cycle"]
    assert selection["models"]["F"]["cycles"] == [1] and chosen["cv"] == metrics["cv"]["A"]
    assert {"all", "public", "private"} <= set(metrics["test"]["ensemble_fixed"])
    submission = pd.read_csv(paths.submission)
    sample = pd.read_csv(paths.demo / "sample_submission.csv")
    assert list(submission.columns) == list(sample.columns) and list(submission["fname"]) == list(sample["fname"])
    values = submission.iloc[:, 1:].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    weights = json.loads(paths.ensemble_weights.read_text())
    submitted = yaml.safe_load((repo / "params.yaml").read_text())["ensemble"]["submit"]
    assert weights["submit"] == submitted and sum(weights["fixed"].values()) == pytest.approx(1.0)
    assert sum(weights["fitted"].values()) == pytest.approx(1.0)
    for png in ("cv_per_model.png", "per_class.png", "training_curves.png"):
        assert (paths.metrics / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = run(["dvc", "metrics", "show"], repo).stdout
    assert "cv.ensemble_fixed" in shown or "ensemble_fixed" in shown


def test_second_repro_does_nothing(repo: Path) -> None:
    assert repro(repo, "--dry") == []
    assert "up to date" in run(["dvc", "status"], repo).stdout


def _out_hashes(repo: Path, stages: list[str]) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {f"{stage}:{out['path']}": out["md5"] for stage in stages for out in lock[stage]["outs"]}


def test_same_params_give_identical_outputs(tiny_pipeline: Path, tmp_path: Path) -> None:
    again = make_repo(tmp_path / "again")
    repro(again, "pseudo_label")
    stages = ["synth", "features", "folds", "train@A", "teacher", "pseudo_label"]
    assert _out_hashes(again, stages) == _out_hashes(tiny_pipeline, stages)


def _set(repo: Path, key: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    node = params
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_model_param_reruns_only_that_model(repo: Path) -> None:
    """A param of model C: only C's stages and the export (which reads every model's params) see a change; the
    report, rerun on C's new predictions, changes only the paper table rows with C; then only the stages reading
    every model's outputs are left to run."""
    tables = repo / "metrics" / "paper_tables.json"
    before = {r["row"]: r for r in json.loads(tables.read_text())["rows"]}
    _set(repo, "models.C.lr_max", 0.002)
    assert sorted(repro(repo, "--dry")) == ["export", "predict@C", "train@C"]
    assert sorted(repro(repo, "report")) == ["predict@C", "report", "train@C"]
    after = {r["row"]: r for r in json.loads(tables.read_text())["rows"]}
    assert after.keys() == before.keys()
    assert all(after[n] == before[n] for n in after if "C" not in after[n]["members"])
    assert any(after[n]["cv"] != before[n]["cv"] for n in after if "C" in after[n]["members"])
    assert sorted(repro(repo, "--dry")) == ["ensemble", "export"]


def test_temperature_reruns_pseudo_labels_and_students_only(repo: Path) -> None:
    """spl.temperature reaches the pseudo labels alone; rerun, they reach the two students alone."""
    _set(repo, "spl.temperature", 1.5)
    assert repro(repo, "--dry") == ["pseudo_label"]
    assert repro(repo, "pseudo_label") == ["pseudo_label"]
    table = pd.read_parquet(Paths(repo).pseudo_labels("leak_free"))
    assert set(table["temperature"]) == {1.5} and set(table["student_fold"]) == {0, 1}
    assert sorted(repro(repo, "--dry")) == ["train_student@B", "train_student@B_leak_free"]


def test_tag_demo_test_clip(tiny_pipeline: Path) -> None:
    """`fsd tag` of one test clip, alone (the predict stage batched it with clips of its length): every class score
    is the clip's row of the submission (the ensemble stage's weighted average of the members' predictions)."""
    submission = pd.read_csv(Paths(tiny_pipeline).submission, index_col="fname")
    test = pd.read_csv(Paths(tiny_pipeline).demo / "test_post_competition.csv")
    clip = Paths(tiny_pipeline).demo / "test" / test["fname"].iloc[0]
    proc = run(["fsd", "tag", str(clip), "--format", "json", "--top-k", str(submission.shape[1])], tiny_pipeline)
    (row,) = json.loads(proc.stdout)
    assert row["file"] == str(clip) and not row.get("error")
    scores = {lab["label"]: lab["score"] for lab in row["labels"]}
    assert list(scores.values()) == sorted(scores.values(), reverse=True)
    assert set(scores) == set(submission.columns)
    expected = submission.loc[clip.name]
    np.testing.assert_allclose([scores[c] for c in submission.columns], expected.to_numpy(), atol=1e-4)
    assert expected.max() - expected.min() > 1e-3  # scores that tell the classes apart


def test_tag_hostile_folder_reports_bad_files_and_tags_the_rest(tiny_pipeline: Path, tmp_path: Path) -> None:
    folder = tmp_path / "to tag"
    accepted = accepted_wavs(folder)
    refused = refused_wavs(folder / "broken")
    test_clip = next((Paths(tiny_pipeline).demo / "test").glob("*.wav"))
    (folder / "demo.wav").write_bytes(test_clip.read_bytes())
    proc = run(["fsd", "tag", str(folder), "--format", "json"], tiny_pipeline, check=False)  # reads it only
    assert proc.returncode == 2, proc.stderr
    rows = {Path(r["file"]).name: r for r in json.loads(proc.stdout)}
    assert set(rows) == {*accepted, *refused, "demo.wav"}
    for name in [*accepted, "demo.wav"]:
        scores = [lab["score"] for lab in rows[name]["labels"]]
        assert len(scores) == 3 and all(0 <= v <= 1 for v in scores), name
    for name, (_, words) in refused.items():
        assert words in rows[name]["error"], (name, rows[name])
        assert f"{name}: " in proc.stderr
    assert "Traceback" not in proc.stderr and "downmixed 6 channels" in proc.stderr
    assert len(ACCEPTED) + 1 == len(accepted)
