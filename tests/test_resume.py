"""Resume after an interruption (fsdlib/resume.py, FoldTraining.resume): a state is taken up only when nothing it
was made from changed, and a state that cannot be used means starting over, never a crash.

The fingerprint covers the spec (every param), the model's name and fold, the fold split, the bytes of the feature
stores, every target array, the init_from snapshot's bytes, the soft pseudo labels and the library's code.
"""

from __future__ import annotations

import logging
import pickle
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from test_train import N_CLASSES, _spec, _store

import fsdlib
import fsdlib.train as train_module
from fsdlib.atomic import save_torch as save
from fsdlib.batches import BatchMaker, FoldData
from fsdlib.models import build_network
from fsdlib.resume import RESUME, ResumeState, code_digest, fingerprint, snapshot_path
from fsdlib.schedule import cyclic_cosine_lr
from fsdlib.settings import InferenceConfig
from fsdlib.spec import ModelSpec, model_spec
from fsdlib.store import FeatureStore
from fsdlib.train import LR_STEP_TSV, FoldTraining, train_fold

INFERENCE = InferenceConfig()  # the library's batching defaults

SPEC = _spec(cycles=2, epochs_per_cycle=1)


class Template(NamedTuple):
    """Built once per module: the stores, and the state an interrupted run leaves after cycle 1."""

    data: FoldData
    state: ResumeState
    snapshot: Path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """One real optimiser step, so that the optimiser has moments and the weights differ from a fresh start."""
    root = tmp_path_factory.mktemp("resume")
    curated, y = _store(root / "curated.logmel.arrow", 48, seed=0)
    noisy, ny = _store(root / "noisy.logmel.arrow", 48, seed=1, noisy=True)
    data = FoldData(curated, y, np.arange(36), np.arange(36, 48), noisy, ny)
    run = FoldTraining(SPEC, data, N_CLASSES, "T", 0, None, "cpu")
    batch = next(BatchMaker(SPEC, data, run.steps_per_epoch, seed=0).epoch())
    run.trainer.step(batch, torch.Generator().manual_seed(0), run.optimizer)
    run.scheduler.step()
    oof = [np.random.default_rng(0).random((len(data.val_idx), N_CLASSES))]
    state = ResumeState(1, run.optimizer.state_dict(), run.scheduler.state_dict(),
                        [{"train/total": 0.5, "lr": 1e-3, "epoch": 1, "val/lwlrap": 0.7}], oof, [SPEC.lr_max])
    save(run.model.state_dict(), root / "snapshot_1.pt")
    return Template(data, state, root / "snapshot_1.pt")


@pytest.fixture
def data(template: Template) -> FoldData:
    """A FoldData of the test's own: a test may swap its stores and arrays (never change them in place)."""
    return replace(template.data)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def interrupt(template: Template, state_dir: Path) -> Callable[[str], tuple[ResumeState, dict[str, torch.Tensor]]]:
    """Writes the template's state into `state_dir` with a fingerprint, as train_fold does: snapshot, then resume.pt."""

    def write(key: str) -> tuple[ResumeState, dict[str, torch.Tensor]]:
        state_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template.snapshot, snapshot_path(state_dir, 1))
        template.state.save(state_dir, key)
        return template.state, torch.load(template.snapshot, weights_only=True)

    return write


def _key(data: FoldData, spec: ModelSpec = SPEC, name: str = "T", fold: int = 0, init: Path | None = None) -> str:
    return fingerprint(spec, data, name, fold, init)


def _changed_copy(store: FeatureStore, path: Path) -> FeatureStore:
    """The store's file with one byte of its first clip's values flipped: same clips, same sizes, other contents."""
    raw = bytearray(store.path.read_bytes())
    at = raw.find(store[0].tobytes()[:64])
    assert at > 0
    raw[at + 1] ^= 0xFF
    path.write_bytes(bytes(raw))
    return FeatureStore.open(path)


def _same_state(got: ResumeState, expected: ResumeState) -> None:
    assert (got.cycle, got.history, got.lr_steps) == (expected.cycle, expected.history, expected.lr_steps)
    assert all(np.array_equal(a, b) for a, b in zip(got.oof, expected.oof, strict=True))
    assert got.scheduler == expected.scheduler
    assert got.optimizer["param_groups"] == expected.optimizer["param_groups"]
    moments = [(k, name) for k, entry in expected.optimizer["state"].items() for name in entry]
    assert moments and all(torch.equal(got.optimizer["state"][k][name], expected.optimizer["state"][k][name])
                           for k, name in moments)


# ---------------------------------------------------------------------------------------------
# ResumeState.load: which states are taken up


def test_a_state_resumes_when_nothing_changed(data: FoldData, state_dir: Path, interrupt: Callable) -> None:
    """The fingerprint recomputed from the stores opened again and copies of every array still matches."""
    state, _ = interrupt(_key(data))
    reopened = FoldData(FeatureStore.open(data.curated.path), data.curated_targets.copy(), data.train_idx.copy(),
                        data.val_idx.copy(), FeatureStore.open(data.noisy.path), data.noisy_targets.copy())
    key = _key(reopened, spec=model_spec(
        {"family": "resnet", "crop": 32, "batch": 12, "cycles": 2, "epochs_per_cycle": 1, "lr_max": 3e-3,
         "lr_min": 1e-5, "arch": {"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "hidden": 16}, "seed": 0}, "T"))
    assert key == _key(data)
    loaded = ResumeState.load(state_dir, key)
    assert loaded is not None
    _same_state(loaded, state)


@pytest.mark.parametrize("change", [
    {"lr_max": 1e-3}, {"lr_min": 1e-6}, {"batch": 6}, {"epochs_per_cycle": 2}, {"seed": 1},
    {"crop": 16}, {"optimizer": "sgd"}, {"noisy_weight": 0.5}, {"activation": "softmax"}, {"multitask": False},
    {"augment": {"mixup": False}}, {"arch": {"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "hidden": 8}},
], ids=lambda change: next(iter(change)))
def test_a_state_written_with_other_params_is_ignored(data: FoldData, state_dir: Path, interrupt: Callable, change: dict,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    interrupt(_key(data))
    key = _key(data, spec=replace(SPEC, **change))
    assert key != _key(data)
    with caplog.at_level(logging.INFO, logger="fsdlib.resume"):
        assert ResumeState.load(state_dir, key) is None
    assert "settings, data or code changed" in caplog.text and "starting over" in caplog.text


@pytest.mark.parametrize(("name", "fold"), [("U", 0), ("T", 1)])
def test_a_state_of_another_model_or_fold_is_ignored(data: FoldData, state_dir: Path, interrupt: Callable, name: str,
                                                     fold: int) -> None:
    interrupt(_key(data))
    assert ResumeState.load(state_dir, _key(data, name=name, fold=fold)) is None


def _change_curated_store(data: FoldData, tmp_path: Path) -> None:
    data.curated = _changed_copy(data.curated, tmp_path / "changed_curated.logmel.arrow")


def _change_noisy_store(data: FoldData, tmp_path: Path) -> None:
    data.noisy = _changed_copy(data.noisy, tmp_path / "changed_noisy.logmel.arrow")


def _change_curated_targets(data: FoldData, tmp_path: Path) -> None:
    data.curated_targets = data.curated_targets.copy()
    data.curated_targets[0] = np.roll(data.curated_targets[0], 1)


def _change_split(data: FoldData, tmp_path: Path) -> None:
    """Clips 35 and 36 trade places between training and validation: the same sizes, another split."""
    data.train_idx, data.val_idx = np.r_[np.arange(35), 36], np.r_[35, np.arange(37, 48)]


def _change_pseudo_labels(data: FoldData, tmp_path: Path) -> None:
    data.spl_targets = np.full((len(data.noisy), N_CLASSES), 1 / N_CLASSES, np.float32)


def _change_noisy_targets(data: FoldData, tmp_path: Path) -> None:
    data.noisy_targets = np.roll(data.noisy_targets, 1, axis=1)  # noisy labels edited, the audio not


DATA_CHANGES = [
    _change_curated_store, _change_noisy_store, _change_curated_targets, _change_split, _change_pseudo_labels,
    _change_noisy_targets,
]


@pytest.mark.parametrize("change", DATA_CHANGES, ids=lambda change: change.__name__.removeprefix("_change_"))
def test_a_state_written_with_other_data_is_ignored(data: FoldData, state_dir: Path, interrupt: Callable, tmp_path: Path,
                                                     change, caplog: pytest.LogCaptureFixture) -> None:
    interrupt(_key(data))
    change(data, tmp_path)
    key = _key(data)
    with caplog.at_level(logging.INFO, logger="fsdlib.resume"):
        assert ResumeState.load(state_dir, key) is None
    assert "settings, data or code changed" in caplog.text


def test_a_state_written_from_other_initial_weights_is_ignored(data: FoldData, state_dir: Path, interrupt: Callable,
                                                                tmp_path: Path) -> None:
    """init_from: the source snapshot's bytes count, not its path; starting without it is a change too."""
    init = tmp_path / "source" / "snapshot_1.pt"
    init.parent.mkdir()
    torch.save({"w": torch.zeros(3)}, init)
    interrupt(_key(data, init=init))
    assert ResumeState.load(state_dir, _key(data, init=init)) is not None
    assert ResumeState.load(state_dir, _key(data)) is None
    torch.save({"w": torch.ones(3)}, init)  # the source model retrained: same path, other weights
    assert ResumeState.load(state_dir, _key(data, init=init)) is None


def _truncated(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


class _Foreign:
    """Not plain data: weights_only loading refuses it."""


CORRUPTIONS = {
    "empty": lambda path: path.write_bytes(b""),
    "garbage": lambda path: path.write_bytes(b"\x00\xffnot a torch file\n" * 50),
    "truncated": _truncated,
    "flipped_bytes": lambda path: path.write_bytes(bytes(b ^ 0x5A for b in path.read_bytes())),
    "code_object": lambda path: torch.save({"fingerprint": "x", "cycle": _Foreign()}, path),
    "plain_pickle": lambda path: path.write_bytes(pickle.dumps({"fingerprint": "x"}, protocol=2)),
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS.values()), ids=list(CORRUPTIONS))
def test_an_unreadable_state_is_ignored_with_a_warning(data: FoldData, state_dir: Path, interrupt: Callable, corrupt,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    key = _key(data)
    interrupt(key)
    corrupt(state_dir / RESUME)
    with caplog.at_level(logging.WARNING, logger="fsdlib.resume"):
        assert ResumeState.load(state_dir, key) is None
    assert "ignoring unreadable resume state" in caplog.text and str(state_dir / RESUME) in caplog.text


@pytest.mark.parametrize("content", [[1, 2], "text", {"fingerprint": "KEY", "cycle": 1}],
                         ids=["list", "string", "missing_keys"])
def test_a_readable_state_of_another_layout_is_ignored(data: FoldData, state_dir: Path, interrupt: Callable,
                                                       content) -> None:
    key = _key(data)
    interrupt(key)
    torch.save({**content, "fingerprint": key} if isinstance(content, dict) else content, state_dir / RESUME)
    assert ResumeState.load(state_dir, key) is None


@pytest.mark.parametrize("cycle", [1, 2])
def test_a_state_whose_snapshot_is_missing_is_ignored_with_a_warning(data: FoldData, state_dir: Path, interrupt: Callable,
                                                                      cycle: int, caplog: pytest.LogCaptureFixture) -> None:
    """The snapshot of the state's cycle is gone (cycle 1), or the state names a cycle whose snapshot was never
    written (cycle 2, only snapshot 1 there)."""
    key = _key(data)
    state, _ = interrupt(key)
    if cycle == 1:
        snapshot_path(state_dir, 1).unlink()
    else:
        replace(state, cycle=2).save(state_dir, key)
    with caplog.at_level(logging.WARNING, logger="fsdlib.resume"):
        assert ResumeState.load(state_dir, key) is None
    assert "snapshot is missing" in caplog.text and "starting over" in caplog.text


# ---------------------------------------------------------------------------------------------
# FoldTraining: what training does with the state


def _assert_fresh(run: FoldTraining, data: FoldData, spec: ModelSpec = SPEC) -> None:
    """Cycle 0, nothing logged, the optimiser without moments, and the initial weights of a run without state."""
    fresh = FoldTraining(spec, data, N_CLASSES, "T", 0, None, "cpu")
    assert (run.cycle, run.history, run.oof, run.lr_steps) == (0, [], [], [])
    assert run.optimizer.state_dict()["state"] == {} and run.scheduler.last_epoch == 0
    weights, expected = run.model.state_dict(), fresh.model.state_dict()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)


def test_training_takes_up_weights_optimiser_schedule_and_logs_when_nothing_changed(
        data: FoldData, state_dir: Path, interrupt: Callable) -> None:
    key = _key(data)
    state, snapshot = interrupt(key)
    run = FoldTraining(SPEC, data, N_CLASSES, "T", 0, None, "cpu", state_dir, key)
    assert run.cycle == 1
    _same_state(ResumeState(run.cycle, run.optimizer.state_dict(), run.scheduler.state_dict(), run.history, run.oof,
                            run.lr_steps), state)
    weights = run.model.state_dict()
    assert all(torch.equal(weights[k], snapshot[k]) for k in snapshot)
    fresh = FoldTraining(SPEC, data, N_CLASSES, "T", 0, None, "cpu").model.state_dict()
    assert not all(torch.equal(weights[k], fresh[k]) for k in fresh)  # the snapshot is not the initial weights


def _other_lr(data: FoldData, state_dir: Path) -> tuple[ModelSpec, str]:
    spec = replace(SPEC, lr_max=1e-3)
    return spec, _key(data, spec=spec)


def _corrupt_state(data: FoldData, state_dir: Path) -> tuple[ModelSpec, str]:
    _truncated(state_dir / RESUME)
    return SPEC, _key(data)


def _lose_snapshot(data: FoldData, state_dir: Path) -> tuple[ModelSpec, str]:
    snapshot_path(state_dir, 1).unlink()
    return SPEC, _key(data)


@pytest.mark.parametrize("spoil", [_other_lr, _corrupt_state, _lose_snapshot], ids=["other_lr", "corrupt_state",
                                                                                     "missing_snapshot"])
def test_training_starts_over_from_fresh_weights_when_the_state_does_not_apply(data: FoldData, state_dir: Path,
                                                                               interrupt: Callable, spoil) -> None:
    interrupt(_key(data))
    spec, key = spoil(data, state_dir)
    run = FoldTraining(spec, data, N_CLASSES, "T", 0, None, "cpu", state_dir, key)
    _assert_fresh(run, data, spec)


def test_training_starts_over_when_the_states_snapshot_is_unreadable(data: FoldData, state_dir: Path,
                                                                     interrupt: Callable) -> None:
    key = _key(data)
    interrupt(key)
    _truncated(snapshot_path(state_dir, 1))
    _assert_fresh(FoldTraining(SPEC, data, N_CLASSES, "T", 0, None, "cpu", state_dir, key), data)


def test_training_starts_over_when_the_code_changed_the_network(data: FoldData, state_dir: Path, interrupt: Callable,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The same params after a code change that adds a layer (simulated by wrapping build_network)."""
    key = _key(data)
    interrupt(key)

    def build_with_another_layer(spec: ModelSpec, n_classes: int) -> torch.nn.Module:
        model = build_network(spec, n_classes)
        model.heads.curated.insert(0, torch.nn.Linear(16, 16))
        return model

    monkeypatch.setattr(train_module, "build_network", build_with_another_layer)
    assert _key(data) == key
    run = FoldTraining(SPEC, data, N_CLASSES, "T", 0, None, "cpu", state_dir, key)
    assert run.cycle == 0


# ---------------------------------------------------------------------------------------------
# End to end: an interrupted training, rerun with another learning rate


def test_an_interrupted_training_rerun_with_another_lr_starts_over(data: FoldData, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    real_predict, calls = train_module.predict_clips, []

    def dies_in_cycle_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed before cycle 2's snapshot
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(train_module, "predict_clips", dies_in_cycle_2)
    with pytest.raises(KeyboardInterrupt):
        train_fold(SPEC, data, N_CLASSES, out, state, name="T", fold=0, device="cpu", progress=False, inference=INFERENCE)
    assert torch.load(state / RESUME, weights_only=True)["cycle"] == 1
    monkeypatch.setattr(train_module, "predict_clips", real_predict)

    spec = replace(SPEC, lr_max=1e-3)
    with caplog.at_level(logging.INFO, logger="fsdlib"):
        result = train_fold(spec, data, N_CLASSES, out, state, name="T", fold=0, device="cpu", progress=False,
                            inference=INFERENCE)
    assert "resuming" not in caplog.text and "settings, data or code changed" in caplog.text
    assert len(result.cycle_lwlrap) == 2 and not state.exists()
    lines = (out / "live" / LR_STEP_TSV).read_text().splitlines()[1:]
    steps = 3 * spec.epochs_per_cycle  # 36 training clips in batches of 12
    lrs = [float(line.split("\t")[1]) for line in lines]
    assert lrs == pytest.approx([cyclic_cosine_lr(k, steps, spec.lr_max, spec.lr_min) for k in range(2 * steps)],
                                rel=1e-12)  # every step, the first cycle's too, at the new learning rate


def test_the_code_digest_follows_every_source_file(tmp_path: Path) -> None:
    """A resume state written by other code is stale: the fingerprint holds a digest of the library's sources."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    (package / "notes.txt").write_text("not code")
    before = code_digest.__wrapped__(package)
    (package / "notes.txt").write_text("still not code")
    assert code_digest.__wrapped__(package) == before
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert code_digest.__wrapped__(package) != before
    (package / "sub" / "b.py").rename(package / "b.py")
    (package / "b.py").write_text("y = 2\n")
    assert code_digest.__wrapped__(package) != before  # the same bytes under another path
    assert code_digest() == code_digest.__wrapped__(Path(fsdlib.__file__).resolve().parent)
