"""The command-line contract: a stage that fails prints one line and exits 1, an interrupted one exits 130, and
`scripts/run_pipeline.sh --paper` writes params/paper.yaml (with --authors, params/authors.yaml) over params.yaml
with data.root set."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from pipeline import REPO, env

STAGE = """
import signal
import sys
from pathlib import Path
from fsdlib.errors import FsdError
from stages.common import stage

@stage
def failing(how):
    if how == "error":
        raise FsdError("something is wrong", "some/params.yaml")
    Path(how).write_text("running")  # tell the test, then wait for its SIGINT
    while True:
        signal.pause()

failing(sys.argv[1])
"""


def _default_sigint() -> None:
    """Ctrl-C as a shell delivers it: a pytest-xdist worker ignores SIGINT, and a child would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _python(tmp_path: Path, *args: str) -> subprocess.Popen:
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    return subprocess.Popen([sys.executable, str(script), *args], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def test_stage_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = _python(tmp_path, "error")
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode, out, err) == (1, "", "error: some/params.yaml: something is wrong\n")


def test_real_stages_fail_with_one_line(tmp_path: Path) -> None:
    missing = subprocess.run(["fsd", "folds", "--params", "nothere.yaml"], cwd=tmp_path, env=env(),
                             capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr == "error: nothere.yaml: params file not found (run from the repository root)\n"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"]["A"]["optimizer"] = "rmsprop"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad_model = subprocess.run(["fsd", "train", "A", "0"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert bad_model.returncode == 1
    assert bad_model.stderr.splitlines() == ["error: params.yaml: models.A.optimizer must be adam or sgd, got 'rmsprop'"]


def test_interrupted_stage_exits_130(tmp_path: Path) -> None:
    marker = tmp_path / "running"
    proc = _python(tmp_path, str(marker))
    deadline = time.monotonic() + 120  # a bound on the interpreter starting, not a timing window
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (130, "", "interrupted\n")


FAKE_DVC = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../dvc_calls"
"""


def _script_tree(tmp_path: Path) -> Path:
    """run_pipeline.sh in a tree of its own: setup.sh does nothing, .venv activates nothing, `dvc` only logs."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "run_pipeline.sh", tree / "scripts")
    (tree / "scripts" / "setup.sh").write_text("")
    (tree / ".venv" / "bin").mkdir(parents=True)
    (tree / ".venv" / "bin" / "activate").write_text("")
    (tree / "bin").mkdir()
    (tree / "bin" / "dvc").write_text(FAKE_DVC)
    (tree / "bin" / "dvc").chmod(0o755)
    shutil.copytree(REPO / "params", tree / "params")
    shutil.copy(REPO / "params.yaml", tree / "params.yaml")
    return tree


def _run_script(tree: Path, *args: str) -> subprocess.CompletedProcess:
    environ = env()
    environ["PATH"] = f"{tree / 'bin'}:{environ['PATH']}"
    return subprocess.run(["bash", str(tree / "scripts" / "run_pipeline.sh"), *args], env=environ,
                          capture_output=True, text=True)


def test_run_pipeline_paper_writes_paper_params_with_the_root(tmp_path: Path) -> None:
    tree = _script_tree(tmp_path)
    root = tmp_path / "FSDKaggle2019 (copy), #2"
    root.mkdir()
    proc = _run_script(tree, "--paper", str(root), "--force")
    assert proc.returncode == 0, proc.stderr
    paper = yaml.safe_load((REPO / "params" / "paper.yaml").read_text())
    written = yaml.safe_load((tree / "params.yaml").read_text())
    assert written["data"] == {"root": str(root)}
    assert {**written, "data": paper["data"]} == paper
    assert (tree / "dvc_calls").read_text().splitlines() == ["repro --force", "metrics show"]


def test_run_pipeline_authors_writes_authors_params_with_the_root(tmp_path: Path) -> None:
    tree = _script_tree(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    proc = _run_script(tree, "--paper", str(root), "--authors", "--force")
    assert proc.returncode == 0, proc.stderr
    authors = yaml.safe_load((REPO / "params" / "authors.yaml").read_text())
    written = yaml.safe_load((tree / "params.yaml").read_text())
    assert {**written, "data": authors["data"]} == authors and written["data"] == {"root": str(root)}
    assert (tree / "dvc_calls").read_text().splitlines() == ["repro --force", "metrics show"]


def test_run_pipeline_paper_refuses_a_missing_root_and_demo_keeps_params(tmp_path: Path) -> None:
    tree = _script_tree(tmp_path)
    missing = _run_script(tree, "--paper", str(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[-1] == f"error: {tmp_path / 'nowhere'}: dataset root not found"
    assert (tree / "params.yaml").read_text() == (REPO / "params.yaml").read_text()
    assert not (tree / "dvc_calls").exists()
    demo = _run_script(tree)
    assert demo.returncode == 0, demo.stderr
    assert (tree / "params.yaml").read_text() == (REPO / "params.yaml").read_text()
    assert (tree / "dvc_calls").read_text().splitlines() == ["repro", "metrics show"]
