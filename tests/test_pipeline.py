"""End to end: the real DVC pipeline on a tiny generated dataset, in a temporary copy of the repository."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ACCEPTED, accepted_wavs, refused_wavs
from pipeline import copy_repo, make_repo, repro, run, tagger_digest, with_distill

from fsdlib.paths import Paths

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's tiny pipeline (conftest.py), which these tests change."""
    return copy_repo(tiny_pipeline, tmp_path_factory.mktemp("pipeline") / "repo")


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
    assert repro(repo) == []
    assert "up to date" in run(["dvc", "status"], repo).stdout


def _out_hashes(repo: Path, stages: list[str]) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {f"{stage}:{out['path']}": out["md5"] for stage in stages for out in lock[stage]["outs"]}


def test_same_params_give_identical_outputs(repo: Path, tmp_path: Path) -> None:
    again = make_repo(tmp_path / "again")
    repro(again, "pseudo_label")
    stages = ["synth", "features", "folds", "train@A", "teacher", "pseudo_label"]
    assert _out_hashes(again, stages) == _out_hashes(repo, stages)


def _set(repo: Path, key: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    node = params
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_model_param_reruns_only_that_model(repo: Path) -> None:
    """Only C's stages and those reading every model rerun; in the paper tables only the rows with C change."""
    tables = repo / "metrics" / "paper_tables.json"
    before = {r["row"]: r for r in json.loads(tables.read_text())["rows"]}
    _set(repo, "models.C.lr_max", 0.002)
    exported = tagger_digest(repo)
    ran = repro(repo)
    assert sorted(ran) == with_distill(repo, exported, ["ensemble", "export", "predict@C", "report", "train@C"])
    after = {r["row"]: r for r in json.loads(tables.read_text())["rows"]}
    assert all(after[n] == before[n] for n in after if "C" not in after[n]["members"])
    assert any(after[n]["cv"] != before[n]["cv"] for n in after if "C" in after[n]["members"])


def test_temperature_reruns_pseudo_labels_and_students_only(repo: Path) -> None:
    _set(repo, "spl.temperature", 1.5)
    exported = tagger_digest(repo)
    ran = repro(repo)
    students = ["train_student@B", "train_student@B_leak_free"]
    assert sorted(ran) == with_distill(repo, exported, ["pseudo_label", *students, "predict@B", "predict@B_leak_free",
                                                        "ensemble", "report", "export"])
    table = pd.read_parquet(Paths(repo).pseudo_labels("leak_free"))
    assert set(table["temperature"]) == {1.5} and set(table["student_fold"]) == {0, 1}


def test_tag_demo_test_clip(repo: Path) -> None:
    test = pd.read_csv(Paths(repo).demo / "test_post_competition.csv")
    clip = Paths(repo).demo / "test" / test["fname"].iloc[0]
    proc = run(["fsd", "tag", str(clip), "--format", "json", "--top-k", "2"], repo)
    rows = json.loads(proc.stdout)
    assert rows[0]["file"] == str(clip) and len(rows[0]["labels"]) == 2
    classes = yaml.safe_load((repo / "params.yaml").read_text())["synth"]["n_classes"]
    assert classes == 4


def test_tag_hostile_folder_reports_bad_files_and_tags_the_rest(repo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "to tag"
    accepted = accepted_wavs(folder)
    refused = refused_wavs(folder / "broken")
    test_clip = next((Paths(repo).demo / "test").glob("*.wav"))
    (folder / "demo.wav").write_bytes(test_clip.read_bytes())
    proc = run(["fsd", "tag", str(folder), "--format", "json"], repo, check=False)
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
