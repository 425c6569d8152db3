"""End to end, DVC experiments: `dvc exp run` reruns only what a param reaches, and queued experiments run two at
a time. Each test works on a copy of its own of the session's tiny pipeline (conftest.py), with a baseline commit of
its own."""

import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from pipeline import copy_repo, env, ran, repro, run

pytestmark = pytest.mark.slow

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
QUEUE_WAIT_S = 900  # a bound on the two queued experiments, not a timing window
RENDEZVOUS_S = 300  # how long one queued experiment's ensemble stage waits for the other's to start


@pytest.fixture
def repo(tiny_pipeline: Path, tmp_path: Path) -> Path:
    """A copy of the tiny pipeline with its outputs committed: the baseline of this test's experiments."""
    repo = copy_repo(tiny_pipeline, tmp_path / "repo")
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "baseline"], repo)
    return repo


def _train_stage(repo: Path, model: str) -> str:
    """The dvc.yaml train stage group that trains `model` (train, train_from_pre or train_student)."""
    groups = yaml.safe_load((repo / "params.yaml").read_text())["stage_models"]
    return next(group for group, models in groups.items() if group != "predict" and model in models)


def _experiments(repo: Path) -> dict[str, dict]:
    """`dvc exp show --json`: each experiment's name and data (params, metrics)."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    return {rev["name"]: rev.get("data") or {} for entry in shown for exp in (entry.get("experiments") or [])
            for rev in exp.get("revs", [])}


def test_experiment_runs_only_dependent_stages(repo: Path) -> None:
    """`dvc exp run ensemble` with a param of model F runs F's stages and the ensemble, nothing else; then `dvc repro
    --dry` names what the change reaches after the ensemble: the report (F's predictions) and the export (every
    model's params; the distilled network follows the export's output)."""
    before = yaml.safe_load((repo / "params.yaml").read_text())["models"]["F"]["lr_max"]
    proc = run(["dvc", "exp", "run", "ensemble", "-S", "models.F.lr_max=0.05"], repo)
    assert sorted(ran(proc)) == ["ensemble", "predict@F", f"{_train_stage(repo, 'F')}@F"]
    assert sorted(repro(repo, "--dry")) == ["export", "report"]
    (name, data), = _experiments(repo).items()
    assert data["params"]["params.yaml"]["data"]["models"]["F"]["lr_max"] == 0.05, name
    assert {"F", "ensemble_fixed"} <= set(data["metrics"]["metrics/metrics.json"]["data"]["cv"]), name
    changed = [line.split() for line in run(["dvc", "params", "diff"], repo).stdout.splitlines() if "models." in line]
    assert changed == [["params.yaml", "models.F.lr_max", str(before), "0.05"]], changed
    diff = run(["dvc", "metrics", "diff", "--all"], repo).stdout
    assert "metrics/metrics.json" in diff and "cv.F" in diff and "cv.ensemble_fixed" in diff


RENDEZVOUS = """#!{python}
# `fsd` for the queued experiments: `fsd ensemble` notes that it started, waits until the other experiment's has
# too, then runs the real fsd. Were the queue to run one experiment at a time, the first would wait in vain.
import os, sys, time
from pathlib import Path

if sys.argv[1:2] == ["ensemble"]:
    here = Path({folder!r})
    (here / f"{{os.getpid()}}.started").touch()
    deadline = time.monotonic() + {limit}
    while len(list(here.glob("*.started"))) < 2:
        if time.monotonic() > deadline:
            sys.exit("fsd (test wrapper): the other queued experiment never started its ensemble stage")
        time.sleep(0.1)
os.execv({fsd!r}, [{fsd!r}, *sys.argv[1:]])
"""

TASK_LOG = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): \w+/MainProcess\] Task "
                      r"dvc\.repo\.experiments\.queue\.tasks\.run_exp\[([0-9a-f-]+)\] "
                      r"(received|succeeded|raised|failed)", re.M)


def _task_times(repo: Path) -> dict[str, dict]:
    """From the queue workers' logs (celery, .dvc/tmp/exps/celery/*.out): when a worker received each experiment
    (task) and when it finished it (whether the experiment succeeded or not: `dvc queue status` tells)."""
    tasks: dict[str, dict] = {}
    for log in (repo / ".dvc/tmp/exps/celery").glob("*.out"):
        for stamp, task, event in TASK_LOG.findall(log.read_text()):
            tasks.setdefault(task, {})["received" if event == "received" else "finished"] = \
                datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
            tasks[task]["worker"] = log.stem
    return tasks


def test_queued_experiments_run_two_at_a_time_and_plots_diff_renders(repo: Path, tmp_path: Path) -> None:
    """Two experiments queued up to the ensemble stage (settings of the ensemble: the queue's mechanics at a
    fraction of a model's time; test_experiment_runs_only_dependent_stages covers a model's param) and `dvc queue
    start -j 2`: the queue workers' own logs show the two experiments overlapping in time, each on its worker. To
    overlap whatever the machine's speed, each experiment's `fsd ensemble` waits until the other's has started."""
    settings = {"ensemble.select=fixed": ("fixed", "fitted"), "ensemble.submit=fixed": ("cv", "fixed")}
    for setting in settings:
        assert "Queued experiment" in run(["dvc", "exp", "run", "--queue", "ensemble", "-S", setting], repo).stdout
    wrapper = tmp_path / "bin" / "fsd"
    (tmp_path / "started").mkdir()
    wrapper.parent.mkdir()
    wrapper.write_text(RENDEZVOUS.format(python=sys.executable, folder=str(tmp_path / "started"), limit=RENDEZVOUS_S,
                                         fsd=str(Path(sys.executable).parent / "fsd")))
    wrapper.chmod(0o755)
    with (tmp_path / "queue_start.log").open("w") as log:  # a file, not a pipe: the workers it starts keep it open
        started = subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=repo, env=env(wrapper.parent), stdout=log,
                                 stderr=subprocess.STDOUT)
    assert started.returncode == 0, (tmp_path / "queue_start.log").read_text()
    deadline = time.monotonic() + QUEUE_WAIT_S
    while sum("finished" in t for t in _task_times(repo).values()) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    run(["dvc", "queue", "stop"], repo, check=False)
    status = run(["dvc", "queue", "status"], repo).stdout
    rows = [line.split() for line in status.splitlines() if re.match(r"[0-9a-f]{7}\s", line)]
    tasks = {row[1]: row[-1] for row in rows}  # name: status (Task, Name, Created, Status)
    logs = {name: run(["dvc", "queue", "logs", name], repo, check=False).stdout for name in tasks}
    assert sorted(tasks.values()) == ["Success", "Success"], status + "".join(logs.values())
    assert all(ran(log) == ["ensemble"] for log in logs.values()), logs

    times = _task_times(repo)
    assert len(times) == 2 and all({"received", "finished"} <= set(t) for t in times.values()), times
    first, second = sorted(times.values(), key=lambda t: t["received"])
    assert first["worker"] != second["worker"], times
    assert second["received"] < first["finished"], f"the queue ran one experiment after the other: {times}"

    experiments = _experiments(repo)
    assert set(experiments) == set(tasks), (experiments.keys(), tasks)
    chosen = {}
    for name, data in experiments.items():
        ensemble = data["params"]["params.yaml"]["data"]["ensemble"]
        chosen[ensemble["select"], ensemble["submit"]] = name
        assert "cv" in data["metrics"]["metrics/metrics.json"]["data"], name
    assert set(chosen) == set(settings.values()), chosen
    out = tmp_path / "plots"
    run(["dvc", "plots", "diff", *experiments, "-o", str(out)], repo)
    page = (out / "index.html").read_text()
    assert "per_class_cv.csv" in page
    for name in experiments:
        assert name in page and any(name in p.name and "cv_per_model" in p.name for p in (out / "static").iterdir())
