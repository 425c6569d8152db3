"""The shared training loop on tiny synthetic stores: learning, determinism, resume, guards."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import fsdlib.train as train_module
from fsdlib.augment import gather_scaled_crop
from fsdlib.batches import Batch, BatchMaker, FoldData
from fsdlib.errors import FsdError
from fsdlib.models import build_network
from fsdlib.plots import read_dvclive_curves
from fsdlib.resume import fingerprint
from fsdlib.schedule import cyclic_cosine_lr
from fsdlib.settings import InferenceConfig
from fsdlib.spec import ModelSpec, model_spec
from fsdlib.store import FeatureStore, StoreWriter
from fsdlib.train import LR_STEP_TSV, FoldTraining, Trainer, end_live, train_fold

INFERENCE = InferenceConfig()  # the library's batching defaults

N_MELS, N_CLASSES = 32, 3
TINY_ARCH = {"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "hidden": 16}
NO_AUGMENT = {"mixup": False, "gain": False, "freq_mask": False, "additional_crop": False}


def _store(path: Path, n: int, seed: int, noisy: bool = False) -> tuple[FeatureStore, np.ndarray]:
    """Log-mel clips whose class shows as energy in its own band of mel bins; noisy labels are partly wrong."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, N_CLASSES, n)
    targets = np.eye(N_CLASSES, dtype=np.float32)[classes]
    with StoreWriter(path, "logmel", np.float32, N_MELS) as writer:
        for i, c in enumerate(classes):
            frames = int(rng.integers(10, 60))
            power = rng.random((frames, N_MELS)).astype(np.float32) * 1e-3
            power[:, c * 10 : c * 10 + 8] += rng.random((frames, 8)).astype(np.float32)
            writer.write([f"{path.stem}{i:04d}.wav"], [power])
    if noisy:
        targets[: n // 3] = np.roll(targets[: n // 3], 1, axis=1)
    return FeatureStore.open(path), targets


@pytest.fixture
def data(tmp_path: Path) -> FoldData:
    curated, y = _store(tmp_path / "curated.logmel.arrow", 48, seed=0)
    noisy, ny = _store(tmp_path / "noisy.logmel.arrow", 48, seed=1, noisy=True)
    return FoldData(curated, y, np.arange(36), np.arange(36, 48), noisy, ny)


def _spec(**kw) -> ModelSpec:
    base = dict(family="resnet", crop=32, batch=12, cycles=2, epochs_per_cycle=3, lr_max=3e-3, lr_min=1e-5,
                arch=TINY_ARCH, seed=0)
    return ModelSpec(**{**base, **kw})


def _run(spec: ModelSpec, data: FoldData, root: Path):
    return train_fold(spec, data, N_CLASSES, root / "out", root / "state", name="T", fold=0, device="cpu",
                      progress=False, inference=INFERENCE)


def test_learns_and_writes_outputs(data: FoldData, tmp_path: Path) -> None:
    result = _run(_spec(cycles=2, epochs_per_cycle=8), data, tmp_path)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("snapshot_*.pt")) == ["snapshot_1.pt", "snapshot_2.pt"]
    oof = np.load(out / "oof.npz")
    assert oof["preds"].shape == (2, 12, N_CLASSES) and list(oof["fnames"][:1]) == ["curated.logmel0036.wav"]
    assert np.all((oof["preds"] >= 0) & (oof["preds"] <= 1))
    assert result.metrics["final"] > 0.8  # chance is about 0.6 for 3 classes
    history = (out / "live" / "plots" / "metrics" / "train" / "total.tsv").read_text().splitlines()
    losses = [float(line.split("\t")[-1]) for line in history[1:]]
    assert losses[-1] < losses[0]
    assert not (tmp_path / "state").exists()


def test_same_seed_same_weights(data: FoldData, tmp_path: Path) -> None:
    spec = _spec(cycles=1, epochs_per_cycle=2)
    _run(spec, data, tmp_path / "a")
    _run(spec, data, tmp_path / "b")
    a = torch.load(tmp_path / "a" / "out" / "snapshot_1.pt")
    b = torch.load(tmp_path / "b" / "out" / "snapshot_1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_interruption_gives_same_weights(data: FoldData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    spec = _spec(cycles=3, epochs_per_cycle=1)
    _run(spec, data, tmp_path / "straight")
    real_predict, calls = train_module.predict_clips, []

    def dies_in_cycle_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if killed before the second snapshot
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(train_module, "predict_clips", dies_in_cycle_2)
    with pytest.raises(KeyboardInterrupt):
        _run(spec, data, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "state" / "snapshot_1.pt").is_file()
    state = torch.load(tmp_path / "resumed" / "state" / "resume.pt", weights_only=True)  # plain data only
    assert state["cycle"] == 1 and len(state["history"]) == 1 and state["oof"][0].shape == (12, N_CLASSES)
    monkeypatch.setattr(train_module, "predict_clips", real_predict)
    with caplog.at_level("INFO", logger="fsdlib.train"):
        _run(spec, data, tmp_path / "resumed")
    assert "T fold 0: resuming after cycle 1 of 3" in caplog.text
    for c in (1, 2, 3):
        a = torch.load(tmp_path / "straight" / "out" / f"snapshot_{c}.pt")
        b = torch.load(tmp_path / "resumed" / "out" / f"snapshot_{c}.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), f"snapshot {c} differs"
    assert (tmp_path / "straight" / "out" / "metrics.json").read_text() == \
        (tmp_path / "resumed" / "out" / "metrics.json").read_text()
    assert (tmp_path / "straight" / "out" / "live" / LR_STEP_TSV).read_text() == \
        (tmp_path / "resumed" / "out" / "live" / LR_STEP_TSV).read_text()


def test_non_finite_loss_stops_with_clear_error(data: FoldData, tmp_path: Path) -> None:
    with pytest.raises(FsdError, match=r"non-finite loss.*T fold 0 cycle 1 epoch 1 step"):
        _run(_spec(lr_max=1e30, lr_min=1e29, cycles=1, epochs_per_cycle=3), data, tmp_path)
    assert not list((tmp_path / "out").glob("snapshot_*.pt"))


def test_softmax_without_multitask_and_init_from(data: FoldData, tmp_path: Path) -> None:
    """A softmax model without multitask, initialised from a sigmoid multitask one (init_from): its predictions are
    distributions over the classes, it has no noisy head, and it starts from the source's weights (at a learning
    rate too small to move them, its trained parameters are still the source's, unlike those of the same model
    trained from its own initialisation)."""
    first = _spec(cycles=1, epochs_per_cycle=1)
    _run(first, data, tmp_path / "first")
    source = torch.load(tmp_path / "first" / "out" / "snapshot_1.pt")
    spec = _spec(cycles=1, epochs_per_cycle=1, activation="softmax", multitask=False, lr_max=1e-9, lr_min=1e-9)
    data.noisy = None
    result = train_fold(spec, data, N_CLASSES, tmp_path / "o", tmp_path / "s", name="S", fold=0,
                        init_weights=tmp_path / "first" / "out" / "snapshot_1.pt", device="cpu", progress=False,
                            inference=INFERENCE)
    assert len(result.cycle_lwlrap) == 1
    preds = np.load(tmp_path / "o" / "oof.npz")["preds"]
    assert preds.shape == (1, 12, N_CLASSES) and (preds >= 0).all()
    np.testing.assert_allclose(preds.sum(axis=-1), 1.0, atol=1e-5)
    sigmoid = np.load(tmp_path / "first" / "out" / "oof.npz")["preds"]
    assert not np.allclose(sigmoid.sum(axis=-1), 1.0, atol=1e-2)  # the check above tells the activations apart

    trained = torch.load(tmp_path / "o" / "snapshot_1.pt")
    assert any(k.startswith("heads.noisy.") for k in source) and not any("noisy" in k for k in trained)
    own = train_fold(spec, data, N_CLASSES, tmp_path / "own" / "o", tmp_path / "own" / "s", name="S", fold=0,
                     device="cpu", progress=False, inference=INFERENCE)
    assert len(own.cycle_lwlrap) == 1
    own_init = torch.load(tmp_path / "own" / "o" / "snapshot_1.pt")
    params = [name for name, _ in build_network(spec, N_CLASSES).named_parameters()]
    assert params and set(params) <= set(trained) and set(params) <= set(source)
    for name in params:
        assert torch.allclose(trained[name], source[name], atol=1e-6), name
    assert any(not torch.allclose(own_init[name], source[name], atol=1e-4) for name in params)


def test_spec_from_params_turns_lists_into_tuples() -> None:
    spec = model_spec({"family": "envnet", "tta_pads": [8000, 32000], "crops": [100, 200]}, "D")
    assert spec.tta_pads == (8000, 32000) and spec.crops == (100, 200) and spec.kind == "wave"


@pytest.mark.parametrize(("values", "problem"), [
    ({"family": "resnet", "optimizer": "rmsprop"}, "models.T.optimizer must be adam or sgd, got 'rmsprop'"),
    ({"family": "cnn"}, "models.T.family must be resnet or envnet"),
    ({"family": "resnet", "pad_mode": "reflect"}, "models.T.pad_mode must be zero or loop"),
    ({"family": "resnet", "lr_min": 1.0, "lr_max": 0.1}, "models.T: need 0 < lr_min <= lr_max"),
    ({"family": "resnet", "spl": {"variant": "some"}}, "models.T.spl.variant must be all_folds or leak_free"),
    ({"family": "resnet", "cycles": 2, "snapshot_cycles": [3]}, r"models.T.snapshot_cycles must lie in 1..2"),
    ({"family": "resnet", "augment": {"time_scale": True}}, r"models.T: augment: unknown keys \[.time_scale.\]"),
    ({"family": "resnet", "epochs": 3}, r"models.T: unknown keys \['epochs'\]"),
    ({"family": "resnet", "loss_reduction": "sum"}, "models.T.loss_reduction must be authors or row_sum, got 'sum'"),
    ({"family": "resnet", "separate_passes": "no"}, "models.T: separate_passes and nesterov must be true or false"),
    ({"family": "envnet", "optimizer": "sgd", "momentum": 0.0}, "models.T: nesterov needs momentum > 0"),
])
def test_bad_spec_names_model_and_problem(values: dict, problem: str) -> None:
    with pytest.raises(FsdError, match=problem):
        model_spec(values, "T")


def test_spec_built_in_code_is_checked_too() -> None:
    with pytest.raises(FsdError, match="^optimizer must be adam or sgd"):
        _spec(optimizer="rmsprop")


def test_fingerprint_follows_store_contents_not_sizes(data: FoldData) -> None:
    spec = _spec()
    before = fingerprint(spec, data, "T", 0, None)
    raw = bytearray(data.curated.path.read_bytes())
    at = raw.find(data.curated[0].tobytes()[:64])  # inside the first clip's values
    assert at > 0
    raw[at] ^= 0xFF
    data.curated.path.write_bytes(bytes(raw))
    assert fingerprint(spec, data, "T", 0, None) != before
    assert fingerprint(spec, data, "T", 1, None) != fingerprint(spec, data, "T", 0, None)


def test_varying_crop_lengths_draw_one_length_per_step(data: FoldData, tmp_path: Path) -> None:
    spec = _spec(crops=(16, 32), batch=6)
    maker = BatchMaker(spec, data, steps_per_epoch=6, seed=0)
    lengths = set()
    for batch in maker.epoch():
        assert batch.curated.x.shape[1] == batch.noisy.x.shape[1]  # the curated and noisy parts share the length
        assert batch.curated.valid.shape == (6, 2) and batch.spl is None
        assert list(batch.parts()) == ["curated", "noisy"]
        lengths.add(batch.curated.x.shape[1])
    assert lengths == {16, 32}
    result = _run(_spec(crops=(16, 32), cycles=1, epochs_per_cycle=1), data, tmp_path)
    assert len(result.cycle_lwlrap) == 1


def test_spl_batches_mix_curated_and_noisy_one_to_one(data: FoldData) -> None:
    data.spl_targets = np.full((len(data.noisy), N_CLASSES), 1 / N_CLASSES, np.float32)
    data.spl_noisy_idx = np.arange(0, 48, 2)  # half the noisy clips: those outside the validation fold
    pool, prob = data.spl_pool()
    noisy_share = prob[pool[:, 0] == 1].sum()
    assert noisy_share == pytest.approx(0.5)
    assert set(pool[pool[:, 0] == 1, 1]) == set(data.spl_noisy_idx.tolist())
    maker = BatchMaker(_spec(batch=12, spl={"variant": "leak_free"}), data, 3, seed=0)
    soft = [np.isclose(b.spl.y, 1 / N_CLASSES).all(axis=1).mean() for _ in range(20) for b in maker.epoch()]
    assert np.mean(soft) == pytest.approx(0.5, abs=0.05)


def test_spl_loss_weight_is_applied(data: FoldData) -> None:
    from fsdlib.losses import multitask_loss

    logits, targets = torch.zeros(4, N_CLASSES), torch.zeros(4, N_CLASSES)
    soft = torch.full((4, N_CLASSES), 0.1)
    base, _ = multitask_loss(logits, targets, None, None, "sigmoid")
    total, parts = multitask_loss(logits, targets, None, None, "sigmoid", spl_logits=logits, spl_targets=soft,
                                  spl_weight=20.0)
    assert parts["spl"] == pytest.approx(0.16)  # (0.5 - 0.1)^2
    assert float(total - base) == pytest.approx(20 * 0.16)


def test_lr_of_every_step_is_logged_as_a_dvclive_curve(data: FoldData, tmp_path: Path) -> None:
    spec = _spec(cycles=2, epochs_per_cycle=2)  # 36 training clips in batches of 12: 3 steps per epoch
    _run(spec, data, tmp_path)
    lines = (tmp_path / "out" / "live" / LR_STEP_TSV).read_text().splitlines()
    assert lines[0] == "step\tlr" and len(lines) == 1 + 2 * 2 * 3
    curves = read_dvclive_curves(tmp_path / "out" / "live")
    steps, lrs = zip(*curves["lr_step"], strict=True)
    assert list(steps) == list(range(12))
    assert lrs == pytest.approx([cyclic_cosine_lr(k, 6, spec.lr_max, spec.lr_min) for k in range(12)], rel=1e-12)
    assert lrs[0] == lrs[6] == spec.lr_max and lrs[5] < lrs[1]  # restarted at the second cycle
    assert {"lr", "train/total", "val/lwlrap"} <= curves.keys()


def _first_batch(spec: ModelSpec, data: FoldData) -> Batch:
    return next(BatchMaker(spec, data, steps_per_epoch=3, seed=0).epoch())


def _model(spec: ModelSpec) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(spec, N_CLASSES)


def test_trainer_uses_the_specs_loss_reduction(data: FoldData) -> None:
    """KL averaged over batch x classes (the authors') is 1/n_classes of KL summed per row."""
    spec = _spec(activation="softmax", augment=NO_AUGMENT)
    batch, model = _first_batch(spec, data), _model(spec)
    losses = {}
    for reduction in ("authors", "row_sum"):
        reduced = _spec(activation="softmax", augment=NO_AUGMENT, loss_reduction=reduction)
        net = copy.deepcopy(model)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        torch.manual_seed(1)  # the same dropout masks
        losses[reduction] = Trainer(reduced, net, torch.device("cpu")).step(batch, torch.Generator(), optimizer)
    for part in ("curated", "noisy"):
        assert losses["row_sum"][part].item() == pytest.approx(N_CLASSES * losses["authors"][part].item(), rel=1e-5)


def _bn_stats(model: torch.nn.Module) -> list[torch.Tensor]:
    return [buffer.clone() for name, buffer in model.named_buffers() if "running_" in name]


@pytest.mark.parametrize("with_spl", [False, True])
def test_separate_passes_keep_batch_norm_statistics_per_part(data: FoldData, with_spl: bool) -> None:
    if with_spl:
        data.spl_targets = np.full((len(data.noisy), N_CLASSES), 1 / N_CLASSES, np.float32)
        data.spl_noisy_idx = np.arange(0, 48, 2)
    spl = {"variant": "leak_free"} if with_spl else {}
    separate, pooled = (_spec(augment=NO_AUGMENT, spl=spl, separate_passes=flag) for flag in (True, False))
    batch, model = _first_batch(separate, data), _model(separate)
    assert len(batch.parts()) == (3 if with_spl else 2)
    stats = {}
    for spec in (separate, pooled):
        net = copy.deepcopy(model)
        Trainer(spec, net, torch.device("cpu")).step(batch, torch.Generator(), torch.optim.SGD(net.parameters()))
        stats[spec.separate_passes] = _bn_stats(net)
    by_hand = copy.deepcopy(model).train()
    trainer = Trainer(separate, by_hand, torch.device("cpu"))
    with torch.no_grad():
        for part in batch.parts().values():  # each part alone through the backbone, in the order of the step
            by_hand.backbone(trainer.prepare(part, torch.Generator())[0])
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(stats[True], _bn_stats(by_hand), strict=True))
    assert not all(torch.allclose(a, b, rtol=1e-3) for a, b in zip(stats[True], stats[False], strict=True))


@pytest.mark.parametrize(("optimizer", "nesterov"), [("sgd", True), ("sgd", False), ("adam", True)])
def test_nesterov_reaches_the_optimizer(data: FoldData, optimizer: str, nesterov: bool) -> None:
    run = FoldTraining(_spec(optimizer=optimizer, nesterov=nesterov), data, N_CLASSES, "T", 0, None, "cpu")
    group = run.optimizer.param_groups[0]
    if optimizer == "sgd":
        assert isinstance(run.optimizer, torch.optim.SGD) and group["nesterov"] is nesterov
    else:
        assert isinstance(run.optimizer, torch.optim.Adam) and "nesterov" not in group


def _ramp_store(path: Path, n: int) -> tuple[FeatureStore, np.ndarray]:
    """int16 waveforms 1, 2, 3, ...: a time-scaled crop shows as repeated samples."""
    with StoreWriter(path, "wave", np.int16, 1) as writer:
        for i in range(n):
            writer.write([f"{path.stem}{i:04d}.wav"], [np.arange(1, 1501 + 37 * i, dtype=np.int16)])
    return FeatureStore.open(path), np.eye(N_CLASSES, dtype=np.float32)[np.arange(n) % N_CLASSES]


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_authors_wave_order_time_scales_and_gains_every_sample(tmp_path: Path, p: float) -> None:
    curated, y = _ramp_store(tmp_path / "curated.wave.arrow", 24)
    noisy, ny = _ramp_store(tmp_path / "noisy.wave.arrow", 24)
    data = FoldData(curated, y, np.arange(18), np.arange(18, 24), noisy, ny,
                    spl_targets=np.full((24, N_CLASSES), 0.5, np.float32), spl_noisy_idx=np.arange(24))
    augment = {"mixup": False, "order": "authors", "p": p, "scale_range": [2.0, 2.0]}  # every chosen clip doubled
    spec = ModelSpec(family="envnet", crop=1000, batch=18, augment=augment, spl={"variant": "leak_free"},
                     arch={"width": 0.25, "hidden": 16})
    batch = next(BatchMaker(spec, data, steps_per_epoch=1, seed=0).epoch())
    trainer = Trainer(spec, build_network(spec, N_CLASSES), torch.device("cpu"))
    scaled, gained = [], []
    for part in batch.parts().values():  # curated, noisy and SPL parts alike
        crops = gather_scaled_crop(torch.from_numpy(part.x), part.scaled).numpy()  # as Trainer.prepare gathers them
        for window in np.rint(crops * 32768).astype(np.int64):
            steps = np.diff(window[window > 0])  # the clip's samples in the window: +1 each, or 0 and +1 if doubled
            assert set(np.unique(steps)) <= {0, 1}
            scaled.append(np.mean(steps == 0) > 0.45)
        ratio = trainer.prepare(part, torch.Generator().manual_seed(0))[0].numpy() / np.where(crops == 0, 1, crops)
        for r in (r[m] for r, m in zip(ratio, crops != 0, strict=True)):
            assert np.allclose(r, r[0], rtol=1e-5)  # one gain per sample: no time scaling on the batch side
            gained.append(abs(r[0] - 1) > 1e-4)
    assert len(scaled) == 3 * 18
    if p == 1.0:
        assert all(scaled) and all(gained)
    else:
        assert 0 < sum(scaled) < len(scaled) and 0 < sum(gained) < len(gained)


class _EndingLive:
    """A dvclive.Live stand-in whose end() fails as given."""

    def __init__(self, error: Exception | None) -> None:
        self.error, self.ended = error, False

    def end(self) -> None:
        self.ended = True
        if self.error is not None:
            raise self.error


def test_a_fold_losing_the_race_for_dvclives_signal_file_still_finishes(tmp_path: Path) -> None:
    # two folds ending at once in one repository: the other one deleted the shared signal file first
    lost = FileNotFoundError(2, "No such file or directory", str(tmp_path / ".dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED"))
    live = _EndingLive(lost)
    end_live(live)
    assert live.ended
    with pytest.raises(FileNotFoundError):  # any other missing file is a real error
        end_live(_EndingLive(FileNotFoundError(2, "No such file or directory", str(tmp_path / "live/metrics.json"))))
