"""init_from: training starts from the source model's snapshot (its weights, before the first step), the noisy head
may be added or dropped, another architecture is refused, and a stage starts from the same fold's last cycle."""

import copy
from pathlib import Path

import pytest
import torch
from test_train import N_CLASSES, _run, _spec, data  # noqa: F401 (data: the fixture)

import fsdlib.train as train_module
from fsdlib.batches import FoldData
from fsdlib.errors import FsdError
from fsdlib.fold_data import init_snapshot
from fsdlib.paths import Paths
from fsdlib.predict import load_snapshot
from fsdlib.settings import InferenceConfig
from fsdlib.train import train_fold

INFERENCE = InferenceConfig()  # the library's batching defaults


def _weights_at_first_step(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """Collects the model's weights when the training loop takes its first step."""
    seen: list[dict[str, torch.Tensor]] = []
    step = train_module.Trainer.step

    def first_step_weights(self, *args, **kwargs):
        if not seen:
            seen.append(copy.deepcopy(self.model.state_dict()))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(train_module.Trainer, "step", first_step_weights)
    return seen


@pytest.mark.parametrize("multitask", [True, False])
def test_training_starts_from_the_source_snapshot(data: FoldData, tmp_path: Path,  # noqa: F811
                                                  monkeypatch: pytest.MonkeyPatch, multitask: bool) -> None:
    _run(_spec(cycles=1, epochs_per_cycle=1), data, tmp_path / "source")
    source = torch.load(tmp_path / "source" / "out" / "snapshot_1.pt", weights_only=True)
    seen = _weights_at_first_step(monkeypatch)
    student = _spec(cycles=1, epochs_per_cycle=1, multitask=multitask, seed=7)  # its own init would differ
    train_fold(student, data, N_CLASSES, tmp_path / "o", tmp_path / "s", name="S", fold=0,
               init_weights=tmp_path / "source" / "out" / "snapshot_1.pt", device="cpu", progress=False, inference=INFERENCE)
    (start,) = seen
    shared = [k for k in start if not k.startswith("heads.noisy.")]
    assert len(shared) > 10 and all(torch.equal(start[k], source[k]) for k in shared)
    assert any(k.startswith("heads.noisy.") for k in start) == multitask


def test_a_snapshot_of_another_architecture_is_refused(data: FoldData, tmp_path: Path) -> None:  # noqa: F811
    _run(_spec(cycles=1, epochs_per_cycle=1), data, tmp_path / "source")
    wider = _spec(cycles=1, epochs_per_cycle=1, arch={"layers": [1, 1, 1, 1], "widths": [8, 8, 8, 16], "hidden": 16})
    source = tmp_path / "source" / "out" / "snapshot_1.pt"
    with pytest.raises(FsdError, match="init_from snapshot does not fit this architecture") as refused:
        train_fold(wider, data, N_CLASSES, tmp_path / "o", tmp_path / "s", name="S", fold=0, init_weights=source,
                   device="cpu", progress=False, inference=INFERENCE)
    assert not list((tmp_path / "o").glob("snapshot_*.pt"))
    with pytest.raises(FsdError, match="snapshot does not load into this model's architecture") as unloadable:
        load_snapshot(wider, N_CLASSES, source, "cpu")
    for error in (refused, unloadable):  # one line, for the stage wrapper to print
        assert "\n" not in str(error.value) and str(source) in str(error.value)


def test_a_stage_starts_from_the_same_folds_last_cycle(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    for fold in (0, 1):
        paths.fold_dir("A", fold).mkdir(parents=True)
        for cycle in (2, 10, 9):
            (paths.fold_dir("A", fold) / f"snapshot_{cycle}.pt").write_bytes(b"")
    student = _spec(init_from="A")
    assert init_snapshot(student, 1, paths) == paths.fold_dir("A", 1) / "snapshot_10.pt"
    assert init_snapshot(_spec(), 1, paths) is None
