"""What the tiny pipeline's outputs promise a user: `fsd tag` gives a clip the scores of its submission row, the
submission is the ensemble.json weights over the chosen snapshots and pads, `snapshot_cycles` and a subset of
`folds.ids` reach the predictions, the ensemble and tagging, `fsd tag`'s options and exit codes, and two fold stages
that run at the same time.

Every test reads the session's tiny pipeline (conftest.py) or a copy of it; none runs the pipeline again."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import refused_wavs
from pipeline import authors_switches, copy_repo, run

from fsdlib.metrics import lwlrap
from fsdlib.paths import Paths

pytestmark = pytest.mark.slow


def _model(repo: Path, name: str, split: str) -> pd.DataFrame:
    """One model's predictions of a split ("test" or "oof") from data/predictions/<name>.npz, averaged over the
    snapshot cycles and pads ensemble.json records as chosen for it."""
    paths = Paths(repo)
    chosen = json.loads(paths.ensemble_weights.read_text())["snapshots"][name]
    with np.load(paths.predictions_of(name)) as z:
        cycles, pads, classes = z["cycles"].tolist(), z["pads"].tolist(), list(z["classes"])
        fnames, grid = list(z["test_fnames" if split == "test" else "curated_fnames"]), z[split].astype(np.float64)
    grid = grid[[cycles.index(c) for c in chosen["cycles"]]][:, [pads.index(p) for p in chosen["pads"]]]
    return pd.DataFrame(grid.mean(axis=(0, 1)), index=fnames, columns=classes)


def _recomputed(repo: Path, which: str, split: str = "test") -> pd.DataFrame:
    """The predictions of the ensemble `which` (ensemble.json: fixed or fitted) recomputed from
    data/predictions/*.npz: each model's chosen cycles and pads averaged, then the models weighted."""
    weights = {m: w for m, w in json.loads(Paths(repo).ensemble_weights.read_text())[which].items() if w > 0}
    return sum(w * _model(repo, m, split) for m, w in weights.items()) / sum(weights.values())


def _truth(repo: Path, csv: str, fnames: list[str], classes: list[str]) -> tuple[np.ndarray, pd.Series]:
    table = pd.read_csv(repo / "data/demo" / csv, index_col="fname").loc[fnames]
    truth = np.array([[c in labels.split(",") for c in classes] for labels in table["labels"]])
    return truth, table.get("usage")


def _submission(repo: Path) -> pd.DataFrame:
    return pd.read_csv(Paths(repo).submission, index_col="fname")


def _tag(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run(["fsd", "tag", *args], repo, check=False)


def _scores_of_json(text: str) -> pd.DataFrame:
    rows = {Path(r["file"]).name: {lab["label"]: lab["score"] for lab in r["labels"]} for r in json.loads(text)}
    return pd.DataFrame.from_dict(rows, orient="index")


def test_submission_is_the_submitted_weights_over_the_chosen_snapshots(tiny_pipeline: Path) -> None:
    ensemble = json.loads(Paths(tiny_pipeline).ensemble_weights.read_text())
    submitted = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())["ensemble"]["submit"]
    assert ensemble["submit"] == submitted == "fitted"
    fitted, fixed = _recomputed(tiny_pipeline, "fitted"), _recomputed(tiny_pipeline, "fixed")
    assert np.abs(fitted.to_numpy() - fixed.to_numpy()).max() > 1e-4  # the comparison tells the two apart
    submission = _submission(tiny_pipeline)
    assert list(submission.index) == list(fitted.index) and list(submission.columns) == list(fitted.columns)
    np.testing.assert_allclose(submission.to_numpy(), fitted.to_numpy(), atol=1e-6)
    selection = json.loads((Paths(tiny_pipeline).metrics / "selection.json").read_text())
    assert {m: {"cycles": row["cycles"], "pads": row["pads"]} for m, row in selection["models"].items()} == \
        ensemble["snapshots"]


def test_metrics_json_is_what_the_stored_predictions_score(tiny_pipeline: Path) -> None:
    """Every CV and test lwlrap in metrics.json, recomputed from data/predictions/*.npz, ensemble.json and the
    dataset's label tables."""
    metrics = json.loads((Paths(tiny_pipeline).metrics / "metrics.json").read_text())
    models = list(json.loads(Paths(tiny_pipeline).ensemble_weights.read_text())["models"])
    preds = {split: {m: _model(tiny_pipeline, m, split) for m in models} for split in ("oof", "test")}
    for split in preds:
        preds[split].update({f"ensemble_{w}": _recomputed(tiny_pipeline, w, split) for w in ("fixed", "fitted")})
    assert set(metrics["cv"]) == set(metrics["test"]) == set(preds["oof"])
    oof = preds["oof"]["A"]
    truth, _ = _truth(tiny_pipeline, "train_curated.csv", list(oof.index), list(oof.columns))
    known = np.all([np.isfinite(p.to_numpy()).all(axis=1) for p in preds["oof"].values()], axis=0)
    assert metrics["cv_clips"] == known.sum() == len(known)  # every fold trained
    for name, p in preds["oof"].items():
        assert metrics["cv"][name] == pytest.approx(lwlrap(truth[known], p.to_numpy()[known]), abs=1e-12), name
    test = preds["test"]["A"]
    truth, usage = _truth(tiny_pipeline, "test_post_competition.csv", list(test.index), list(test.columns))
    for name, p in preds["test"].items():
        for part, rows in (("all", usage.notna()), ("public", usage == "Public"), ("private", usage == "Private")):
            rows = rows.to_numpy()
            expected = lwlrap(truth[rows], p.to_numpy()[rows])
            assert metrics["test"][name][part] == pytest.approx(expected, abs=1e-12), (name, part)


def test_fsd_tag_scores_are_the_clips_submission_rows(tiny_pipeline: Path, tmp_path: Path) -> None:
    """Every class score `fsd tag` gives a test clip (submitted weights, csv to --output) is its submission row,
    in the whole folder and alone; --weights fixed (json) gives the fixed-weight ensemble."""
    submission = _submission(tiny_pipeline)
    n_classes = submission.shape[1]
    out = tmp_path / "tags.csv"
    proc = _tag(tiny_pipeline, "data/demo/test", "--top-k", str(n_classes), "--format", "csv", "--output", str(out))
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    tags = pd.read_csv(out)
    assert set(tags["rank"]) == set(range(1, n_classes + 1)) and tags["error"].isna().all()
    tags["fname"] = [Path(f).name for f in tags["file"]]
    scores = tags.pivot(index="fname", columns="label", values="score").loc[submission.index, submission.columns]
    np.testing.assert_allclose(scores.to_numpy(), submission.to_numpy(), atol=1.5e-6)

    shortest = min(submission.index, key=lambda f: sf.info(str(tiny_pipeline / "data/demo/test" / f)).frames)
    alone = _tag(tiny_pipeline, f"data/demo/test/{shortest}", "-k", str(n_classes), "-f", "json")
    assert alone.returncode == 0, alone.stderr  # batched with longer clips in the predict stage, alone here
    scores = _scores_of_json(alone.stdout).loc[[shortest], submission.columns]
    np.testing.assert_allclose(scores.to_numpy(), submission.loc[[shortest]].to_numpy(), atol=1e-5)

    fixed = _tag(tiny_pipeline, "data/demo/test", "-k", str(n_classes), "-f", "json", "--weights", "fixed")
    assert fixed.returncode == 0, fixed.stderr
    expected = _recomputed(tiny_pipeline, "fixed").loc[submission.index]
    scores = _scores_of_json(fixed.stdout).loc[submission.index, expected.columns]
    np.testing.assert_allclose(scores.to_numpy(), expected.to_numpy(), atol=2e-6)


def test_fsd_tag_table_fitted_weights_and_exit_codes(tiny_pipeline: Path, tmp_path: Path) -> None:
    submission = _submission(tiny_pipeline)
    table = _tag(tiny_pipeline, "data/demo/test", "-k", str(submission.shape[1]), "--weights", "fitted")
    assert table.returncode == 0, table.stderr  # fitted: what params.yaml submits
    lines = table.stdout.splitlines()
    assert len(lines) == len(submission)
    for line in lines:
        path, shown = line.split("\t")
        pairs = [pair.rsplit(" ", 1) for pair in shown.split("  ")]
        scores = [float(s) for _, s in pairs]
        assert scores == sorted(scores, reverse=True)
        row = submission.loc[Path(path).name]
        assert {c: float(s) for c, s in pairs} == pytest.approx(row.to_dict(), abs=6e-4), path
    clip = sorted((tiny_pipeline / "data/demo/test").glob("*.wav"))[0]

    refused = refused_wavs(tmp_path / "broken")
    every_bad = _tag(tiny_pipeline, str(tmp_path / "broken"), "--format", "json")
    assert every_bad.returncode == 1
    assert {Path(r["file"]).name for r in json.loads(every_bad.stdout) if "error" in r} == set(refused)
    errors = every_bad.stderr.splitlines()
    assert all(any(line.startswith(f"error: {path}: ") for line in errors) for path, _ in refused.values())

    (tmp_path / "empty").mkdir()
    nothing = _tag(tiny_pipeline, str(tmp_path / "empty"))
    assert nothing.returncode == 1 and nothing.stderr.splitlines()[-1].startswith("error: no audio files")

    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "params.yaml").write_text((tiny_pipeline / "params.yaml").read_text())
    no_model = run(["fsd", "tag", str(clip)], untrained, check=False)
    assert no_model.returncode == 1 and no_model.stderr.strip().endswith("no trained ensemble (run `dvc repro` first)")

    usage = _tag(tiny_pipeline, str(clip), "--format", "xml")
    assert usage.returncode == 2 and "Invalid value" in usage.stderr, usage.stderr
    for proc in (every_bad, nothing, no_model):
        assert "Traceback" not in proc.stderr


PREDICT_AND_ENSEMBLE = """
import yaml
from pathlib import Path
from stages.ensemble import ensemble
from stages.predict import predict
params = Path("params.yaml")
for model in yaml.safe_load(params.read_text())["stage_models"]["predict"]:
    predict(model, params=params, device="cpu")
ensemble(params=params)
"""


def _set_params(repo: Path, change: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in change.items():
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_snapshot_cycles_and_a_subset_of_fold_ids_reach_predictions_ensemble_and_tags(tiny_pipeline: Path,
                                                                                     tmp_path: Path) -> None:
    """models.A.snapshot_cycles [2] with ensemble.select fixed, and folds.ids [0] of 2 folds: A predicts with its
    second snapshot only, every model with fold 0 only; the ensemble scores fold 0's clips; tags still match."""
    repo = copy_repo(tiny_pipeline, tmp_path / "repo")
    before = Paths(tiny_pipeline)
    _set_params(repo, {"models.A.snapshot_cycles": [2], "ensemble.select": "fixed", "folds.ids": [0]})
    script = tmp_path / "predict_and_ensemble.py"  # outside the copy: the installed code, as `fsd` runs
    script.write_text(PREDICT_AND_ENSEMBLE)
    run([sys.executable, str(script)], repo)

    with np.load(Paths(repo).predictions_of("A")) as new, np.load(before.predictions_of("A")) as old:
        assert new["cycles"].tolist() == [2] and old["cycles"].tolist() == [1, 2]
        fold0 = new["curated_folds"] == 0
        assert np.isnan(new["oof"][:, :, ~fold0]).all() and np.isfinite(new["oof"][:, :, fold0]).all()
        np.testing.assert_allclose(new["oof"][0][:, fold0], old["oof"][1][:, fold0], atol=1e-6)
        assert np.abs(new["test"][0] - old["test"][1]).max() > 1e-6  # fold 0's snapshot alone, not both folds'
    ensemble = json.loads(Paths(repo).ensemble_weights.read_text())
    assert ensemble["snapshots"]["A"]["cycles"] == [2] and ensemble["snapshots"]["C"]["cycles"] == [1]
    metrics = json.loads((Paths(repo).metrics / "metrics.json").read_text())
    assert metrics["cv_clips"] == int(fold0.sum()) and "cv_nested" not in metrics

    submission = _submission(repo)
    np.testing.assert_allclose(submission.to_numpy(), _recomputed(repo, ensemble["submit"]).to_numpy(), atol=1e-6)
    tags = _tag(repo, "data/demo/test", "-k", str(submission.shape[1]), "-f", "json")
    assert tags.returncode == 0, tags.stderr
    scores = _scores_of_json(tags.stdout).loc[submission.index, submission.columns]
    np.testing.assert_allclose(scores.to_numpy(), submission.to_numpy(), atol=1.5e-6)


def test_the_tiny_pipeline_ran_the_authors_switches(tiny_pipeline: Path) -> None:
    """dvc repro ran with params/authors.yaml's switches (tests/pipeline.py): DVC tracked them as each training's
    params, and every switched model trained all its folds."""
    lock = yaml.safe_load((tiny_pipeline / "dvc.lock").read_text())["stages"]
    stage_of = {name: stage for stage, entry in lock.items() for name in [stage.split("@")[-1]]
                if stage.startswith(("train@", "train_from_pre@", "train_student@"))}
    switched = authors_switches()
    checked = 0
    for name, switches in switched.items():
        if name not in stage_of:
            continue  # a model the tiny pipeline leaves out (Table 1's ablations)
        tracked = lock[stage_of[name]]["params"]["params.yaml"][f"models.{name}"]
        for key, value in switches.items():
            assert (tracked[key] == value) if key != "augment" else value.items() <= tracked["augment"].items(), name
        assert all((tiny_pipeline / "data/models" / name / f"fold{k}" / "snapshot_1.pt").is_file() for k in (0, 1))
        checked += 1
    assert checked >= 9  # the ResNets A, A_crops, B, B_leak_free, C and the EnvNets pre, D, E, F
