"""Inference (docs/method.md §8): length grouping, group padding, padding TTA, and edge cases, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fsdlib.inference import length_groups, pad_clip, predict_clips
from fsdlib.models import MultitaskHeads, TaggingModel, build_model
from fsdlib.settings import InferenceConfig

INFERENCE = InferenceConfig()  # the library's batching defaults

N_MELS, N_CLASSES = 32, 5
ATOL = 1e-5
ONE_CLIP = InferenceConfig(max_batch=1)  # the one-clip-per-batch path: no group padding
ARCH = {
    "resnet": {"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "hidden": 16},
    "envnet": {"width": 0.25, "hidden": 16},
}
KIND = {"resnet": "logmel", "envnet": "wave"}


def _model(family: str) -> TaggingModel:
    """A random tiny model in eval mode, with non-trivial batch-norm statistics and a curated head scaled up
    so that predictions differ between clips by far more than the tolerance of the comparisons."""
    torch.manual_seed(0)
    model = build_model(family, N_CLASSES, True, **ARCH[family])
    shape = (4, 1, N_MELS, 60) if family == "resnet" else (4, model.backbone.min_samples + 1000)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(shape) * (1.0 if family == "resnet" else 0.1))
        model.heads.curated[-1].weight.mul_(10.0 if family == "resnet" else 50.0)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from two threads, and on a busy machine the threads wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["resnet", "envnet"])
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def models() -> dict[str, TaggingModel]:
    return {family: _model(family) for family in ARCH}


def _logmel(frames: int, rng: np.random.Generator) -> np.ndarray:
    """A power log-mel (frames, n_mels) spanning a wide dynamic range, so the 80 dB floor matters."""
    return (10.0 ** rng.uniform(-12, 0, (frames, N_MELS))).astype(np.float32)


def _wave(samples: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(samples) * rng.uniform(300, 8000)).astype(np.int16)


def _clips(family: str, lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    """Clips of the given lengths: frames for log-mel; for waveforms a length unit is 1,000 samples."""
    rng = np.random.default_rng(seed)
    if family == "resnet":
        return [_logmel(n, rng) for n in lengths]
    return [_wave(n * 1000, rng) for n in lengths]


def _reference_logmel(power: np.ndarray, pad: int = 0) -> tuple[np.ndarray, float]:
    """docs/method.md §2/§8 written out in float64: TTA pad at max power × 1e-8 (max dB − 80), dB with floor 1e-10 and
    an 80 dB range, standardised by the clip's own statistics (a constant clip gives 0). Returns the input
    (n_mels, frames) and its silence: the quietest input value, which is the floor whenever the clip reaches it."""
    power = power.astype(np.float64)
    padded = np.pad(power, ((pad, pad), (0, 0)), constant_values=power.max() * 1e-8)
    db = 10.0 * np.log10(np.maximum(padded, 1e-10))
    db = np.maximum(db, db.max() - 80.0)
    x = (db - db.mean()) / (db.std() + 1e-7)
    return x.T, float(x.min())


def _predict_alone(model: TaggingModel, x: np.ndarray, activation: str = "sigmoid") -> np.ndarray:
    """The model on one input (log-mel (n_mels, frames) or wave (samples,)) in a batch of one."""
    x_t = torch.as_tensor(x, dtype=torch.float32)
    x_t = x_t[None, None] if x_t.ndim == 2 else x_t[None]
    return model.predict(x_t, activation)[0].numpy()


# ---------------------------------------------------------------------------------------------
# length_groups


@pytest.mark.parametrize(
    ("cfg", "inner"),
    [
        (InferenceConfig(), 128),
        (InferenceConfig(tolerance=0.0, max_batch=5), 1),
        (InferenceConfig(tolerance=0.5, max_batch=16, max_elements=20_000), 4),
        (InferenceConfig(tolerance=0.1, max_batch=64, max_elements=3_000), 1),
    ],
)
def test_length_groups_partition_tolerance_caps_and_order(cfg: InferenceConfig, inner: int) -> None:
    rng = np.random.default_rng(1)
    lengths = np.concatenate([np.exp(rng.uniform(0, np.log(4000), 400)).astype(int), [1, 1, 7, 7, 7, 3800]])
    rng.shuffle(lengths)
    groups = length_groups(lengths.tolist(), cfg, inner)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    previous_longest = 0
    for g in groups:
        members = lengths[g]
        assert len(g) >= 1
        assert np.all(members.max() <= (1.0 + cfg.tolerance) * members)
        assert len(g) <= cfg.max_batch
        assert len(g) == 1 or len(g) * members.max() * inner <= cfg.max_elements
        assert members.min() >= previous_longest  # shortest first
        previous_longest = members.max()


def test_length_groups_over_the_element_cap_a_clip_stands_alone() -> None:
    groups = length_groups([10, 500, 10], InferenceConfig(max_elements=100), inner=1)
    assert [g.tolist() for g in groups] == [[0, 2], [1]]


def test_length_groups_tolerance_joins_similar_lengths() -> None:
    groups = length_groups([100, 300, 119, 120, 121, 299], InferenceConfig(tolerance=0.2))
    assert [sorted(g.tolist()) for g in groups] == [[0, 2, 3], [4], [1, 5]]


# ---------------------------------------------------------------------------------------------
# pad_clip


def test_pad_clip_zero_fills_both_ends() -> None:
    clip = np.arange(6, dtype=np.float32).reshape(3, 2) + 1
    out = pad_clip(clip, 2, "zero", 0.5)
    assert out.shape == (7, 2)
    np.testing.assert_array_equal(out[2:5], clip)
    assert np.all(out[:2] == 0.5) and np.all(out[5:] == 0.5)
    assert pad_clip(clip, 0, "zero", 0.5) is clip


@pytest.mark.parametrize("pad", [1, 3, 7, 20])
def test_pad_clip_loop_tiles_copies_even_beyond_the_clip_length(pad: int) -> None:
    clip = np.array([1, 2, 3], dtype=np.int16)
    out = pad_clip(clip, pad, "loop", 0.0)
    assert len(out) == 3 + 2 * pad
    np.testing.assert_array_equal(out, clip[(np.arange(len(out)) - pad) % 3])
    mel = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(pad_clip(mel, pad, "loop", 0.0), mel[(np.arange(3 + 2 * pad) - pad) % 3])


# ---------------------------------------------------------------------------------------------
# The network input: TTA pads at the clip's silence floor, group padding with silence


class _Recorder(nn.Module):
    """A backbone that keeps the inputs it is given and returns one feature per sample.

    Its list of inputs is shared with its copies, so it also records through predict_clips' inference copy.
    """

    out_features = 1

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.lengths: list[torch.Tensor | None] = []

    def __deepcopy__(self, memo: dict) -> _Recorder:
        twin = _Recorder()
        twin.inputs, twin.lengths = self.inputs, self.lengths
        return twin

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        self.inputs.append(x.clone())
        self.lengths.append(lengths)
        return x.flatten(1).mean(dim=1, keepdim=True)


def _recording_model() -> tuple[TaggingModel, _Recorder]:
    recorder = _Recorder()
    return TaggingModel(recorder, MultitaskHeads(1, N_CLASSES, hidden=4)), recorder


@pytest.mark.parametrize("pad", [5, 40])
def test_logmel_tta_pads_sit_at_the_silence_floor_before_standardisation(pad: int) -> None:
    rng = np.random.default_rng(2)
    power = (10.0 ** rng.uniform(-2, 0, (20, N_MELS))).astype(np.float32)  # 20 dB: the floor lies below it
    model, recorder = _recording_model()
    predict_clips(model, [power], "logmel", "sigmoid", pads=(pad,), device="cpu", pad_mode="zero", cfg=INFERENCE)
    (x,) = recorder.inputs
    expected, _ = _reference_logmel(power, pad)
    assert x.shape == (1, 1, N_MELS, 20 + 2 * pad)
    np.testing.assert_allclose(x[0, 0].numpy(), expected, atol=1e-4)
    db = 10.0 * np.log10(np.pad(power.astype(np.float64), ((pad, pad), (0, 0)), constant_values=power.max() * 1e-8))
    floor = (db.max() - 80.0 - db.mean()) / db.std()  # max dB − 80, standardised with the pads included
    pads = np.concatenate([x[0, 0, :, :pad].numpy(), x[0, 0, :, 20 + pad :].numpy()], axis=1)
    np.testing.assert_allclose(pads, floor, atol=1e-4)
    assert x[0, 0, :, pad : 20 + pad].min() > floor + 1.0  # the clip itself stays well above its floor


def test_logmel_loop_tta_pads_with_copies_of_the_clip() -> None:
    power = _logmel(6, np.random.default_rng(3))
    model, recorder = _recording_model()
    predict_clips(model, [power], "logmel", "sigmoid", pads=(10,), pad_mode="loop", device="cpu", cfg=INFERENCE)
    expected, _ = _reference_logmel(power[(np.arange(26) - 10) % 6])
    np.testing.assert_allclose(recorder.inputs[0][0, 0].numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("pad", [0, 3])
def test_group_padding_is_each_clips_own_silence(pad: int) -> None:
    """Each clip is padded to the group's longest with its quietest input value: its silence floor when it
    reaches it (always with a TTA pad), else its own quietest frame (a 20 dB clip without TTA pad)."""
    rng = np.random.default_rng(4)
    clips = [_logmel(50, rng), (10.0 ** rng.uniform(-2, 0, (55, N_MELS))).astype(np.float32), _logmel(58, rng)]
    model, recorder = _recording_model()
    predict_clips(model, clips, "logmel", "sigmoid", pads=(pad,), device="cpu", pad_mode="zero", cfg=INFERENCE)
    (x,) = recorder.inputs  # one group, padded to 58 + 2 × pad frames
    assert x.shape == (3, 1, N_MELS, 58 + 2 * pad)
    assert recorder.lengths[0].tolist() == [50 + 2 * pad, 55 + 2 * pad, 58 + 2 * pad]  # the network is told
    for row, clip in enumerate(clips):
        expected, silence = _reference_logmel(clip, pad)
        width = expected.shape[1]
        np.testing.assert_allclose(x[row, 0, :, :width].numpy(), expected, atol=1e-4)
        np.testing.assert_allclose(x[row, 0, :, width:].numpy(), silence, atol=1e-4)


def test_silent_logmel_clip_is_all_zeros_with_its_group_padding() -> None:
    """A silent clip's input is all 0 (logmel_to_input's convention); its group padding is 0 too."""
    silent, normal = np.zeros((40, N_MELS), np.float32), _logmel(45, np.random.default_rng(9))
    model, recorder = _recording_model()
    predict_clips(model, [silent, normal], "logmel", "sigmoid", device="cpu", pads=(0,), pad_mode="zero", cfg=INFERENCE)
    (x,) = recorder.inputs
    assert x.shape == (2, 1, N_MELS, 45) and torch.count_nonzero(x[0]) == 0


# ---------------------------------------------------------------------------------------------
# predict_clips with real networks


def test_grouping_keeps_original_order_and_equals_one_clip_batches(family: str, models: dict) -> None:
    """Equal lengths within each group (no group padding): grouped = one clip per batch = the model alone."""
    model = models[family]
    lengths = [30, 60, 30, 120, 60, 30, 120, 60] if family == "resnet" else [25, 40, 25, 40, 25]
    clips = _clips(family, lengths, seed=5)
    grouped = predict_clips(model, clips, KIND[family], "sigmoid", device="cpu", pads=(0,), pad_mode="zero", cfg=INFERENCE)
    one_clip = predict_clips(model, clips, KIND[family], "sigmoid", cfg=ONE_CLIP, device="cpu", pads=(0,), pad_mode="zero")
    if family == "resnet":
        alone = np.stack([_predict_alone(model, _reference_logmel(c)[0]) for c in clips])
    else:
        alone = np.stack([_predict_alone(model, c / 32768.0) for c in clips])
    assert grouped.shape == (len(clips), N_CLASSES)
    assert np.ptp(alone, axis=0).max() > 100 * ATOL  # the clips' predictions really differ
    np.testing.assert_allclose(grouped, one_clip, atol=ATOL)
    np.testing.assert_allclose(grouped, alone, atol=ATOL)


@pytest.mark.parametrize("pad", [0, 4])
def test_grouped_clips_predict_as_they_do_alone(family: str, models: dict, pad: int) -> None:
    """Different lengths in a group: each clip predicts as it does alone, the group padding ignored."""
    model = models[family]
    lengths = [100, 90, 40, 95, 44, 81, 42] if family == "resnet" else [30, 27, 33, 22]
    clips = _clips(family, lengths, seed=6)
    cfg = InferenceConfig(tolerance=0.25)
    grouped = predict_clips(model, clips, KIND[family], "sigmoid", pads=(pad,), cfg=cfg, device="cpu", pad_mode="zero")
    sizes = [len(c) + 2 * pad for c in clips]
    groups = length_groups(sizes, cfg, N_MELS if family == "resnet" else 1)
    assert max(len(g) for g in groups) > 1
    expected = np.empty_like(grouped)
    for i, clip in enumerate(clips):
        x = _reference_logmel(clip, pad)[0] if family == "resnet" else np.pad(clip / 32768.0, (pad, pad))
        expected[i] = _predict_alone(model, x)
    np.testing.assert_allclose(grouped, expected, atol=ATOL)


def test_empty_pad_list_is_plain_prediction(family: str, models: dict) -> None:
    clips = _clips(family, [30, 50, 31] if family == "resnet" else [22, 30])
    plain = predict_clips(models[family], clips, KIND[family], "sigmoid", pads=(0,), device="cpu", pad_mode="zero",
                          cfg=INFERENCE)
    no_tta = predict_clips(models[family], clips, KIND[family], "sigmoid", pads=(), device="cpu", pad_mode="zero",
                           cfg=INFERENCE)
    np.testing.assert_array_equal(no_tta, plain)


@pytest.mark.parametrize("pad_mode", ["zero", "loop"])
def test_tta_average_is_the_mean_of_single_pad_predictions(family: str, models: dict, pad_mode: str) -> None:
    model = models[family]
    if family == "resnet":
        lengths, pads = [20, 60, 20, 60, 140], (0, 8, 32)
    else:
        lengths, pads = [22, 40, 22], (0, 8000, 32000)
    clips = _clips(family, lengths, seed=7)  # equal lengths within each group, whatever the pad
    averaged = predict_clips(model, clips, KIND[family], "sigmoid", pads=pads, pad_mode=pad_mode, device="cpu",
                             cfg=INFERENCE)
    singles = [predict_clips(model, clips, KIND[family], "sigmoid", pads=(p,), pad_mode=pad_mode, device="cpu",
                             cfg=INFERENCE)
               for p in pads]
    assert np.abs(singles[0] - singles[-1]).max() > 100 * ATOL  # the pads really change the predictions
    np.testing.assert_allclose(averaged, np.mean(singles, axis=0), atol=ATOL)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_silent_and_very_short_clips_give_finite_probabilities(family: str, models: dict, activation: str) -> None:
    model = models[family]
    if family == "resnet":
        silent, short = np.zeros((40, N_MELS), np.float32), _logmel(1, np.random.default_rng(8))
        normal = _logmel(45, np.random.default_rng(9))
    else:
        silent, short = np.zeros(30_000, np.int16), _wave(100, np.random.default_rng(8))
        normal = _wave(33_000, np.random.default_rng(9))
    for clips, pads in [([silent], (0,)), ([short], (0,)), ([short, silent, normal], (0, 8)), ([silent, normal], (2,))]:
        p = predict_clips(model, clips, KIND[family], activation, pads=pads, device="cpu", pad_mode="zero", cfg=INFERENCE)
        assert p.shape == (len(clips), N_CLASSES)
        assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
        if activation == "softmax":
            np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-4)


def test_silent_logmel_clip_in_a_group_predicts_as_an_all_zero_input(models: dict) -> None:
    """Grouped with a longer clip, a silent clip predicts as an all-zero input of its own length."""
    model = models["resnet"]
    silent, normal = np.zeros((40, N_MELS), np.float32), _logmel(45, np.random.default_rng(9))
    grouped = predict_clips(model, [silent, normal], "logmel", "sigmoid", device="cpu", pads=(0,), pad_mode="zero",
                            cfg=INFERENCE)
    np.testing.assert_allclose(grouped[0], _predict_alone(model, np.zeros((N_MELS, 40))), atol=ATOL)
    assert np.abs(grouped[0] - _predict_alone(model, np.zeros((N_MELS, 45)))).max() > 10 * ATOL


# ---------------------------------------------------------------------------------------------
# Memory caps of predict_clips' batches


class _MeanBackbone(nn.Module):
    """One feature per sample, whatever else the model passes it (clip lengths)."""

    out_features = 1

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x.flatten(1).mean(dim=1, keepdim=True)


@pytest.mark.parametrize("kind", ["wave", "logmel"])
def test_predict_clips_caps_waveform_batches_by_samples_and_logmel_batches_by_elements(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Waveform batches hold at most `max_samples` samples (batch × padded length); log-mel batches at most
    `max_elements` values (batch × padded frames × mels), `max_samples` not applying to them. A clip longer than
    the cap stands alone. Every batch the model is given is recorded, whatever predict's other arguments."""
    shapes: list[tuple[int, ...]] = []
    predict = TaggingModel.predict

    def recording_predict(self: TaggingModel, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return predict(self, x, *args, **kwargs)

    monkeypatch.setattr(TaggingModel, "predict", recording_predict)
    model = TaggingModel(_MeanBackbone(), MultitaskHeads(1, N_CLASSES, hidden=4))
    rng = np.random.default_rng(10)
    lengths = [1000, 1100, 900, 1050, 950, 1200, 1000, 5000]  # similar lengths (tolerance 1.0), and one long clip
    if kind == "wave":
        clips = [_wave(n, rng) for n in lengths]
        cfg, cap, inner = InferenceConfig(tolerance=1.0, max_samples=3_000), 3_000, 1
    else:
        clips = [_logmel(n // 50, rng) for n in lengths]  # 18 to 24 frames, and 100
        cfg, cap, inner = InferenceConfig(tolerance=1.0, max_samples=10, max_elements=60 * N_MELS), 60 * N_MELS, N_MELS
    preds = predict_clips(model, clips, kind, "sigmoid", cfg=cfg, device="cpu", pads=(0,), pad_mode="zero")
    assert preds.shape == (len(clips), N_CLASSES)
    sizes = [int(np.prod(shape)) for shape in shapes]  # batch × padded length (× 1 × mels for log-mels)
    assert sum(shape[0] for shape in shapes) == len(clips)  # every clip predicted once
    assert [shape for shape, size in zip(shapes, sizes, strict=True) if shape[0] > 1 and size > cap] == []
    assert max(shape[0] for shape in shapes) > 1  # the cap still groups clips: it is not one clip per batch
    assert [size for shape, size in zip(shapes, sizes, strict=True) if size > cap] == [len(clips[-1]) * inner]
