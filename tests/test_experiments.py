"""End to end, DVC experiments: `dvc exp run` reruns only what a param reaches, and queued experiments run two at
a time. A file of its own, on a copy of its own, so that pytest-xdist runs it beside tests/test_pipeline.py."""

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from pipeline import copy_repo, run, tagger_digest, with_distill

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's tiny pipeline (conftest.py), which these tests change."""
    return copy_repo(tiny_pipeline, tmp_path_factory.mktemp("experiments") / "repo")


def _train_stage(repo: Path, model: str) -> str:
    """The dvc.yaml train stage group that trains `model` (train, train_from_pre or train_student)."""
    groups = yaml.safe_load((repo / "params.yaml").read_text())["stage_models"]
    return next(group for group, models in groups.items() if group != "predict" and model in models)


def test_experiment_runs_only_dependent_stages(repo: Path) -> None:
    run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "baseline"], repo)
    exported = tagger_digest(repo)
    proc = run(["dvc", "exp", "run", "-S", "models.F.lr_max=0.05"], repo)
    ran = sorted(set(re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr)))
    train_f = _train_stage(repo, "F")
    assert ran == with_distill(repo, exported, ["ensemble", "export", "predict@F", "report", f"{train_f}@F"])
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    assert "metrics/metrics.json" in json.dumps(shown) and "ensemble_fixed" in json.dumps(shown)
    assert "models.F.lr_max" in run(["dvc", "params", "diff"], repo).stdout
    diff = run(["dvc", "metrics", "diff", "--all"], repo).stdout
    assert "metrics/metrics.json" in diff and "cv.F" in diff and "cv.ensemble_fixed" in diff


def test_queued_experiments_run_two_at_a_time_and_plots_diff_renders(repo: Path, tmp_path: Path) -> None:
    run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "baseline for the queue"], repo)
    # Settings of the ensemble stage: the queue's mechanics are the same as for training params, at a fraction of
    # the time (test_experiment_runs_only_dependent_stages covers a model's param).
    for setting in ("ensemble.select=fixed", "ensemble.submit=fixed"):
        assert "Queued experiment" in run(["dvc", "exp", "run", "--queue", "-S", setting], repo).stdout
    run(["dvc", "queue", "start", "-j", "2"], repo)
    deadline = time.monotonic() + 900
    while True:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        assert time.monotonic() < deadline, status
        time.sleep(3)
    run(["dvc", "queue", "stop"], repo, check=False)
    failed = [line.split()[0] for line in status.splitlines() if "Failed" in line]
    logs = "".join(run(["dvc", "queue", "logs", task], repo, check=False).stdout for task in failed)
    assert not failed and status.count("Success") == 2, status + logs
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    runs = [exp for entry in shown for exp in (entry.get("experiments") or [])]
    settings = set()
    for exp in runs:
        for rev in exp.get("revs", []):
            data = rev.get("data") or {}
            ensemble = data.get("params", {}).get("params.yaml", {}).get("data", {})["ensemble"]
            settings.add((ensemble["select"], ensemble["submit"]))
            assert "cv" in data.get("metrics", {}).get("metrics/metrics.json", {}).get("data", {}), rev
    assert {("fixed", "fitted"), ("cv", "fixed")} <= settings, settings
    out = tmp_path / "plots"
    run(["dvc", "plots", "diff", "HEAD~1", "-o", str(out)], repo)
    page = (out / "index.html").read_text()
    assert "cv_per_model.png" in page and "per_class_cv.csv" in page
