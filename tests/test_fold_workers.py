"""A model's folds trained at once (fsdlib/fold_workers.py, fsdlib/placement.py): the placement policy, the same
weights as training the folds one after another, and resuming every fold after the stage is killed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pipeline import copy_repo, env

from fsdlib.errors import FsdError
from fsdlib.fold_workers import FoldJob, train_folds
from fsdlib.paths import Paths
from fsdlib.placement import Placement, Slot, plan_slots
from fsdlib.settings import InferenceConfig, Params
from fsdlib.spec import ModelSpec


def test_cpu_workers_times_threads_fill_the_cores() -> None:
    assert plan_slots(5, Placement(), "cpu", cores=2, n_gpus=0) == [Slot("cpu", 1)] * 2
    assert plan_slots(5, Placement(cpu_threads=2), "auto", cores=8, n_gpus=0) == [Slot("cpu", 2)] * 4
    assert plan_slots(5, Placement(cpu_threads=4), "cpu", cores=2, n_gpus=0) == [Slot("cpu", 4)]  # never zero
    assert plan_slots(1, Placement(), "cpu", cores=16, n_gpus=4) == [Slot("cpu", 1)]  # never more than folds


def test_gpu_workers_share_a_gpu_and_spread_over_several() -> None:
    assert plan_slots(5, Placement(gpu_workers=5), "auto", cores=16, n_gpus=1) == [Slot("cuda:0", 3)] * 5
    assert plan_slots(5, Placement(gpu_workers=2), "cuda:1", cores=16, n_gpus=2) == [Slot("cuda:1", 8)] * 2
    slots = plan_slots(5, Placement(gpu_workers=2), "cuda", cores=16, n_gpus=4)
    assert [s.device for s in slots] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0"]  # one per GPU first
    assert {s.threads for s in slots} == {3}


@pytest.mark.parametrize(("call", "words"), [
    (lambda: plan_slots(0, Placement(), "cpu", 2, 0), "no folds"),
    (lambda: plan_slots(2, Placement(), "cuda", 2, 0), "CUDA is not available"),
    (lambda: plan_slots(2, Placement(), "tpu", 2, 1), "unknown device"),
    (lambda: Placement(cpu_threads=0), "cpu_threads"),
    (lambda: Placement(gpu_workers=1.5), "gpu_workers"),
])
def test_bad_placement_is_one_clear_error(call, words: str) -> None:
    with pytest.raises(FsdError, match=words):
        call()


def _jobs(repo: Path, model: str) -> list[FoldJob]:
    params = Params.load(repo / "params.yaml")
    spec, cfg = params.read(ModelSpec, f"models.{model}"), params.read(InferenceConfig, "inference")
    return [FoldJob(spec, model, k, cfg, Paths(repo)) for k in params.folds()]


def _snapshots(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: torch.load(p, weights_only=True) for p in sorted(out.glob("snapshot_*.pt"))}


def _assert_same_fold_outputs(a: Path, b: Path) -> None:
    sa, sb = _snapshots(a), _snapshots(b)
    assert sa.keys() == sb.keys() and sa
    for name in sa:
        assert all(torch.equal(sa[name][k], sb[name][k]) for k in sa[name]), f"{a} {name} differs"
    with np.load(a / "oof.npz") as x, np.load(b / "oof.npz") as y:
        assert np.array_equal(x["preds"], y["preds"])
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()


def test_concurrent_folds_match_folds_one_after_another(tiny_pipeline: Path, tmp_path: Path) -> None:
    """Two one-thread workers at once give each fold bit for bit the weights of one process training the folds in
    turn with one thread (model A: two cycles, multitask, augmentations; then C's first fold, which the worker that
    finishes first takes up: a worker trains one fold after another)."""
    together, in_turn = copy_repo(tiny_pipeline, tmp_path / "together"), copy_repo(tiny_pipeline, tmp_path / "turn")
    results = train_folds(_jobs(together, "A") + _jobs(together, "C")[:1], [Slot("cpu", 1)] * 2, progress=False)
    train_folds(_jobs(in_turn, "A") + _jobs(in_turn, "C")[:1], [Slot("cpu", 1)], progress=False)
    assert [len(r.cycle_lwlrap) for r in results] == [2, 2, 1]
    for model, k in (("A", 0), ("A", 1), ("C", 0)):
        _assert_same_fold_outputs(Paths(together).fold_dir(model, k), Paths(in_turn).fold_dir(model, k))


def test_a_failing_fold_names_itself(tiny_pipeline: Path, tmp_path: Path) -> None:
    repo = copy_repo(tiny_pipeline, tmp_path / "repo")
    for path in Paths(repo).fold_dir("A", 1).glob("snapshot_*.pt"):  # B fold 1 starts from A fold 1's last snapshot
        path.write_bytes(b"not a snapshot")
    with pytest.raises(FsdError, match="training B fold 1 failed"):
        train_folds(_jobs(repo, "B"), [Slot("cpu", 1)] * 2, progress=False)


def test_killed_stage_resumes_every_fold_to_the_same_weights(tiny_pipeline: Path, tmp_path: Path) -> None:
    """SIGKILL of `fsd train C` (two workers) once every fold has a finished cycle: the workers die with it, and a
    rerun continues each unfinished fold from its saved cycle to the weights of an uninterrupted run."""
    repo = copy_repo(tiny_pipeline, tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["C"].update(cycles=4, epochs_per_cycle=2)
    params["placement"]["cpu_threads"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    straight = copy_repo(repo, tmp_path / "straight")
    command = [sys.executable, "-m", "stages.cli", "train", "C", "--device", "cpu", "--no-progress"]
    subprocess.run(command, cwd=straight, env=env(), check=True, capture_output=True)

    killed = subprocess.Popen(command, cwd=repo, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    states = [Paths(repo).state_dir("C", k) / "resume.pt" for k in (0, 1)]
    deadline = time.monotonic() + 600  # a bound on the first cycles, not a timing window
    while not all(p.exists() for p in states) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    resumable = [k for k in (0, 1) if (Paths(repo).state_dir("C", k) / "resume.pt").exists()]
    rerun = subprocess.run(command, cwd=repo, env=env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for k in resumable:
        assert f"C fold {k}: resuming after cycle" in rerun.stderr, rerun.stderr
    for k in (0, 1):
        _assert_same_fold_outputs(Paths(repo).fold_dir("C", k), Paths(straight).fold_dir("C", k))
