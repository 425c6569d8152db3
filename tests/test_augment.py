import math

import numpy as np
import pytest
import torch

from fsdlib import augment
from fsdlib.augment import (
    BC_HOP,
    BC_MIN_DB,
    BC_WINDOW,
    LogMelAugmentConfig,
    WaveAugmentConfig,
    augment_logmel,
    augment_wave,
    bc_mixup,
    gather_scaled_crop,
)
from fsdlib.batches import Part, crop_logmel, crop_wave, scaled_crop_windows, scaled_window_width
from fsdlib.clip_input import logmel_to_input
from fsdlib.errors import FsdError
from fsdlib.models import build_network
from fsdlib.spec import ModelSpec
from fsdlib.train import Trainer

B, N_MELS, T, C = 16, 128, 64, 20
ONLY = {"mixup": False, "gain": False, "freq_mask": False, "additional_crop": False}
WAVE_ONLY = {"mixup": False, "time_scale": False, "gain": False}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logmel_cfg(name: str, p: float = 1.0) -> LogMelAugmentConfig:
    return LogMelAugmentConfig(**{**ONLY, name: True}, p=p)


def _wave_cfg(name: str, p: float = 1.0) -> WaveAugmentConfig:
    return WaveAugmentConfig(**{**WAVE_ONLY, name: True}, p=p)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    power = torch.rand(B, N_MELS, T, generator=g) + 0.1
    targets = (torch.rand(B, C, generator=g) < 0.2).float()
    valid = torch.tensor([[0, T]] * B)
    return power, targets, valid


def _runs(mask: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean mask."""
    edges = np.diff(np.concatenate([[0], mask.int().numpy(), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


# Loader-side crops.


def test_crop_logmel_long_clip_is_a_window() -> None:
    clip = np.arange(300 * 4, dtype=np.float32).reshape(300, 4)
    batch, valid = crop_logmel([clip], 100, np.random.default_rng(0))
    start = int(batch[0, 0, 0]) // 4
    assert batch.shape == (1, 100, 4) and np.array_equal(batch[0], clip[start : start + 100])
    assert valid.tolist() == [[0, 100]]


def test_crop_logmel_short_clip_zero_and_loop() -> None:
    clip = np.arange(1, 31, dtype=np.float32).reshape(30, 1) * np.ones((1, 4), np.float32)
    rng = np.random.default_rng(1)
    offsets = set()
    for _ in range(20):
        batch, valid = crop_logmel([clip], 100, rng)
        start, stop = valid[0]
        offsets.add(int(start))
        assert stop - start == 30 and np.array_equal(batch[0, start:stop], clip)
        assert batch[0, :start].sum() == 0 and batch[0, stop:].sum() == 0
    assert len(offsets) > 1

    looped, valid = crop_logmel([clip], 100, rng, pad_mode="loop")
    assert valid.tolist() == [[0, 100]] and (looped[0] > 0).all()
    assert np.array_equal(np.diff(looped[0, :, 0]) % 30, np.ones(99) % 30)  # consecutive frames, wrapping


def test_crop_wave_pads_half_length_both_sides() -> None:
    rng = np.random.default_rng(0)
    short = np.full(10, 16384, dtype=np.int16)
    batch = crop_wave([short, short], 100, rng)
    assert batch.dtype == np.float32 and batch.shape == (2, 100) and set(np.unique(batch)) == {0.0, 0.5}
    assert ((batch != 0).sum(1) == 10).all()  # a short clip always lies wholly inside the crop

    clip = np.full(150, 16384, dtype=np.int16)
    kept = [int((crop_wave([clip], 100, rng)[0] != 0).sum()) for _ in range(200)]
    assert min(kept) >= 50 and min(kept) < 60 and max(kept) == 100  # up to L/2 zeros at either end

    long = (np.arange(1000) - 500).astype(np.int16)
    window = crop_wave([long], 100, rng, pad_mode="loop")[0] * 32768
    assert np.all(np.isin(window, long))


# Log-mel augmentations.


def test_p_zero_leaves_logmel_unchanged() -> None:
    power, targets, valid = _batch()
    cfg = LogMelAugmentConfig(additional_crop=True, p=0.0)
    out, out_targets = augment_logmel(power, targets, valid, cfg, _gen())
    assert torch.equal(out, power) and torch.equal(out_targets, targets)


def test_same_seed_same_logmel_batch() -> None:
    power, targets, valid = _batch()
    cfg = LogMelAugmentConfig(additional_crop=True)
    first = augment_logmel(power, targets, valid, cfg, _gen(3))
    second = augment_logmel(power, targets, valid, cfg, _gen(3))
    third = augment_logmel(power, targets, valid, cfg, _gen(4))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], third[0])


def test_freq_mask_is_one_contiguous_band_of_8_to_32() -> None:
    power = torch.ones(64, N_MELS, T)
    out, _ = augment_logmel(power, torch.zeros(64, C), torch.tensor([[0, T]] * 64), _logmel_cfg("freq_mask"), _gen())
    widths = set()
    for sample in out:
        zero_bins = (sample == 0).all(dim=1)
        assert ((sample == 0) | (sample == 1)).all() and (sample[~zero_bins] == 1).all()
        runs = _runs(zero_bins)
        assert len(runs) == 1 and 8 <= runs[0] <= 32
        widths.add(runs[0])
    assert len(widths) > 5


def test_freq_mask_clamps_to_few_mels() -> None:
    out, _ = augment_logmel(
        torch.ones(4, 6, T), torch.zeros(4, C), torch.tensor([[0, T]] * 4), _logmel_cfg("freq_mask"), _gen()
    )
    assert (out == 0).all()


def test_gain_factor_in_range() -> None:
    power, targets, valid = _batch()
    out, out_targets = augment_logmel(power, targets, valid, _logmel_cfg("gain"), _gen())
    ratio = out / power
    per_sample = ratio[:, 0, 0]
    assert torch.allclose(ratio, per_sample[:, None, None].expand_as(ratio))
    assert ((per_sample >= 0.8) & (per_sample <= 1.2)).all() and torch.equal(out_targets, targets)


def test_mixup_convex_combination_of_two_different_samples() -> None:
    levels = torch.arange(1.0, B + 1)
    power = levels[:, None, None].expand(B, N_MELS, T).clone()
    targets = torch.eye(B)
    out, mixed = augment_logmel(power, targets, torch.tensor([[0, T]] * B), _logmel_cfg("mixup"), _gen())
    for i in range(B):
        lam = mixed[i, i]
        others = mixed[i].clone()
        others[i] = 0
        j = int(others.argmax())
        assert j != i and 0 < lam < 1
        assert torch.isclose(mixed[i, j], 1 - lam) and torch.isclose(mixed[i].sum(), torch.tensor(1.0))
        assert torch.allclose(out[i], lam * levels[i] + (1 - lam) * levels[j])


def test_mixup_skips_a_batch_of_one() -> None:
    power, targets, valid = _batch()
    out, out_targets = augment_logmel(power[:1], targets[:1], valid[:1], _logmel_cfg("mixup"), _gen())
    assert torch.equal(out, power[:1]) and torch.equal(out_targets, targets[:1])


def test_additional_crop_keeps_25_to_100_percent_of_the_content() -> None:
    n, frames = 64, 200
    spans = torch.tensor([[0, frames]] * (n // 2) + [[30, 110]] * (n // 2))
    power = torch.ones(n, 4, frames)
    out, _ = augment_logmel(power, torch.zeros(n, C), spans, _logmel_cfg("additional_crop"), _gen())
    fractions = []
    for sample, (start, stop) in zip(out, spans.tolist(), strict=True):
        kept = (sample != 0).all(dim=0)
        runs = _runs(kept)
        assert len(runs) == 1 and 0.25 * (stop - start) <= runs[0] <= stop - start
        first = int(kept.int().argmax())
        assert start <= first and first + runs[0] <= stop
        fractions.append(runs[0] / (stop - start))
    assert min(fractions) < 0.5 and max(fractions) > 0.8


def test_augmentations_apply_with_probability_p() -> None:
    power = torch.ones(400, 8, 4)
    out, _ = augment_logmel(power, torch.zeros(400, 2), torch.tensor([[0, 4]] * 400), _logmel_cfg("gain", p=0.5), _gen())
    changed = (out[:, 0, 0] != 1).float().mean()
    assert 0.4 < changed < 0.6


def test_logmel_to_input_standardises_each_sample() -> None:
    power, _, _ = _batch()
    power[0] = 0  # a silent clip
    power[1, :, 10:] = 0  # a short clip zero-padded by the crop
    x = logmel_to_input(power)
    assert x.shape == (B, 1, N_MELS, T) and torch.isfinite(x).all()
    assert torch.equal(x[0], torch.zeros_like(x[0]))
    flat = x[1:].flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(B - 1), atol=1e-4)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(B - 1), atol=1e-4)


def test_logmel_to_input_constant_sample_is_exactly_zero() -> None:
    power = torch.stack([torch.zeros(N_MELS, 3810), torch.full((N_MELS, 3810), 0.37)])
    assert torch.equal(logmel_to_input(power), torch.zeros(2, 1, N_MELS, 3810))


def test_logmel_to_input_floors_80_db_below_peak() -> None:
    power = torch.tensor([[[1.0, 1e-3, 1e-12, 0.0]]])
    db = 10 * torch.log10(torch.tensor([1.0, 1e-3, 1e-8, 1e-8]))
    expected = (db - db.mean()) / (db.std(unbiased=False) + 1e-7)
    assert torch.allclose(logmel_to_input(power)[0, 0, 0], expected, atol=1e-5)


# Waveform augmentations.


def test_p_zero_leaves_wave_unchanged() -> None:
    wave = torch.rand(B, 1000, generator=_gen()) - 0.5
    targets = torch.eye(B)
    out, out_targets = augment_wave(wave, targets, WaveAugmentConfig(p=0.0), _gen())
    assert torch.equal(out, wave) and torch.equal(out_targets, targets)


def test_same_seed_same_wave_batch() -> None:
    wave = torch.rand(B, 1000, generator=_gen()) - 0.5
    first = augment_wave(wave, torch.eye(B), WaveAugmentConfig(), _gen(7))
    second = augment_wave(wave, torch.eye(B), WaveAugmentConfig(), _gen(7))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_wave_mixup_never_mixes_a_clip_with_itself() -> None:
    levels = torch.linspace(-0.9, 0.9, B)
    wave = levels[:, None].expand(B, 500).clone()
    out, mixed = augment_wave(wave, torch.eye(B), _wave_cfg("mixup"), _gen(2))
    for i in range(B):
        lam = mixed[i, i]
        others = mixed[i].clone()
        others[i] = 0
        j = int(others.argmax())
        assert j != i and 0 < lam < 1 and torch.isclose(mixed[i, j], 1 - lam)
        assert torch.allclose(out[i], lam * levels[i] + (1 - lam) * levels[j])


def test_wave_gain_within_6_db() -> None:
    wave = torch.rand(64, 300, generator=_gen()) + 0.1
    out, _ = augment_wave(wave, torch.zeros(64, 2), _wave_cfg("gain"), _gen())
    ratio = out / wave
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))
    db = 20 * torch.log10(ratio[:, 0])
    assert (db.abs() <= 6 + 1e-4).all() and db.min() < -3 and db.max() > 3


def test_time_scale_factor_between_0_8_and_1_25() -> None:
    length = 2000
    ramp = torch.arange(length, dtype=torch.float64)[None].repeat(64, 1)
    out, _ = augment_wave(ramp, torch.zeros(64, 2), _wave_cfg("time_scale"), _gen())
    factors = []
    for sample in out:
        content = sample != 0
        runs = _runs(content)
        assert len(runs) == 1 and runs[0] >= 0.8 * length - 1
        slope = torch.diff(sample[content]).mean()
        factors.append(float(1 / slope))
        assert torch.allclose(torch.diff(sample[content]), slope.expand(runs[0] - 1), atol=1e-6)
    assert 0.8 - 1e-3 <= min(factors) < 0.95 and 1.1 < max(factors) <= 1.25 + 1e-3


# The authors' waveform order (docs/method.md §11): whole-clip time scaling on the loader, BC mixing.


def _naive_scaled_crops(
    clips: list[np.ndarray], length: int, seed: int, scale_range: tuple[float, float], p: float, pad_mode: str
) -> np.ndarray:
    """Resample each whole clip (nearest neighbour), pad, crop: the same draws as crop_wave_scaled documents."""
    rng = np.random.default_rng(seed)
    low, high = scale_range
    factor = low * (high / low) ** rng.random(len(clips))
    factor = np.where(rng.random(len(clips)) < p, factor, 1.0)
    out = []
    for clip, f in zip(clips, factor, strict=True):
        scaled = clip[(np.arange(int(len(clip) * f)) / f).astype(np.int64)]
        mode = "wrap" if pad_mode == "loop" and len(scaled) > 0 else "constant"
        padded = np.pad(scaled, (length // 2, length - length // 2), mode=mode)
        start = rng.integers(0, len(padded) - length + 1)
        out.append(padded[start : start + length] / 32768.0)
    return np.stack(out).astype(np.float32)


def crop_wave_scaled(clips: list[np.ndarray], length: int, rng: np.random.Generator,
                     scale_range: tuple[float, float] = (0.8, 1.25), p: float = 1.0, pad_mode: str = "zero") -> np.ndarray:
    """The authors' crop as training makes it: the loader's windows, then the batch side's gather (on the CPU)."""
    window, crop = scaled_crop_windows(clips, length, rng, scale_range, p, pad_mode)
    return gather_scaled_crop(torch.from_numpy(window), crop).numpy()


@pytest.mark.parametrize("pad_mode", ["zero", "loop"])
@pytest.mark.parametrize("length", [1000, 999])
def test_crop_wave_scaled_equals_resampling_the_whole_clip(pad_mode: str, length: int) -> None:
    rng = np.random.default_rng(5)
    sizes = [5000, 1200, 1000, 300, 1, 0] * 6
    clips = [rng.integers(-32768, 32768, size=n).astype(np.int16) for n in sizes]
    for seed in range(4):
        ours = crop_wave_scaled(clips, length, np.random.default_rng(seed), (0.8, 1.25), 0.7, pad_mode)
        reference = _naive_scaled_crops(clips, length, seed, (0.8, 1.25), 0.7, pad_mode)
        assert ours.dtype == np.float32 and ours.shape == (len(clips), length)
        assert np.array_equal(ours, reference)


def test_crop_wave_scaled_p_zero_is_crop_wave() -> None:
    rng = np.random.default_rng(0)
    clips = [rng.integers(-32768, 32768, size=n).astype(np.int16) for n in (3000, 400, 0)]
    advanced = np.random.default_rng(9)
    advanced.random(len(clips))
    advanced.random(len(clips))
    expected = crop_wave(clips, 1000, advanced)
    assert np.array_equal(crop_wave_scaled(clips, 1000, np.random.default_rng(9), p=0.0), expected)


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_crop_wave_scaled_scales_every_clip_at_p_one(factor: float) -> None:
    ramp = np.arange(20_000, dtype=np.int16)
    batch = crop_wave_scaled([ramp] * 32, 2000, np.random.default_rng(1), (factor, factor), p=1.0)
    for window in np.rint(batch * 32768).astype(np.int64):
        content = np.flatnonzero(window)  # the first clip sample (0) is indistinguishable from padding
        source = window[content]
        assert len(source) >= 999 and np.all(np.diff(content) == 1)
        # Scaled sample k comes from clip sample floor(k / factor): find the k of the first one.
        guess = int(source[0] * factor)
        mappings = [((k + np.arange(len(source))) / factor).astype(np.int64) for k in range(guess - 2, guess + 3)]
        assert any(np.array_equal(source, mapping) for mapping in mappings)
    with pytest.raises(FsdError):
        crop_wave_scaled([ramp], 100, np.random.default_rng(0), (1.25, 0.8))


def _host_scaled_crops(
    clips: list[np.ndarray], length: int, rng: np.random.Generator, scale_range: tuple[float, float], p: float,
    pad_mode: str,
) -> np.ndarray:
    """The authors' crop as the loader computed it on the host before the device gathered it (docs/method.md §11),
    kept as the reference: positions in the scaled clip, wrapped or masked, then clip[(position / f) as int64]."""
    low, high = scale_range
    factor = low * (high / low) ** rng.random(len(clips))
    factor = np.where(rng.random(len(clips)) < p, factor, 1.0)
    left = length // 2
    batch = np.zeros((len(clips), length), dtype=np.float32)
    for i, (clip, f) in enumerate(zip(clips, factor, strict=True)):
        scaled = int(len(clip) * f)
        start = rng.integers(0, scaled + 1)
        position = np.arange(start - left, start - left + length)
        if pad_mode == "loop" and scaled > 0:
            inside = slice(None)
            position %= scaled
        else:
            inside = (position >= 0) & (position < scaled)
            position = position[inside]
        batch[i, inside] = clip[(position / f).astype(np.int64)] / 32768.0
    return batch


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pad_mode", ["zero", "loop"])
@pytest.mark.parametrize("whole_batch", [False, True])
def test_windows_gathered_on_the_device_equal_the_host_crop_bit_for_bit(
    device: str, pad_mode: str, whole_batch: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader's windows, gathered on the device, are the crops the host computed, from the same draws, for
    clips shorter and longer than the crop (lengths 0 and 1 too), scale factors at both ends of the range, p < 1."""
    if whole_batch:  # the CPU gathers every row at once, as an accelerator does
        monkeypatch.setattr(augment, "CPU_GATHER_ELEMENTS", 1 << 40)
    rng = np.random.default_rng(11)
    ranges = [(0.8, 1.25), (0.8, 0.8), (1.25, 1.25), (0.5, 2.0), (2.0, 2.0), (0.3, 0.7)]
    for trial in range(24):
        length = int(rng.choice([1, 2, 7, 500, 999, 1000, int(rng.integers(1, 4000))]))
        sizes = [0, 1, 2, 3, length - 1, length, length + 1, 2 * length, *rng.integers(0, 4 * length + 2, 12)]
        clips = [rng.integers(-32768, 32768, size=max(int(n), 0)).astype(np.int16) for n in sizes]
        scale_range, p = ranges[trial % len(ranges)], (1.0, 0.6, 0.0)[trial % 3]
        loader, host = np.random.default_rng(trial), np.random.default_rng(trial)
        window, crop = scaled_crop_windows(clips, length, loader, scale_range, p, pad_mode)
        expected = _host_scaled_crops(clips, length, host, scale_range, p, pad_mode)
        assert window.dtype == np.int16 and window.shape == (len(clips), scaled_window_width(length, scale_range))
        ours = gather_scaled_crop(torch.from_numpy(window).to(device), crop).cpu().numpy()
        assert ours.dtype == np.float32 and np.array_equal(ours.view(np.uint32), expected.view(np.uint32))
        assert loader.random() == host.random()  # the same draws, in the same order
        assert np.array_equal(crop_wave_scaled(clips, length, np.random.default_rng(trial), scale_range, p, pad_mode),
                              expected)


@pytest.mark.parametrize("pad_mode", ["zero", "loop"])
def test_scaled_windows_hold_what_the_crop_reads_at_both_ends_of_the_range(pad_mode: str) -> None:
    """Paper-scale crops of long and short clips at f = 0.8 and 1.25 exactly: every crop sample the host computes
    comes out of the fixed-width window, whatever the clip's length."""
    length = 13_330
    rng = np.random.default_rng(3)
    clips = [rng.integers(-32768, 32768, size=n).astype(np.int16) for n in (1, 9_000, 13_329, 13_331, 150_000)] * 8
    for factor in (0.8, 1.25):
        for seed in range(3):
            window, crop = scaled_crop_windows(clips, length, np.random.default_rng(seed), (factor, factor), 1.0,
                                               pad_mode)
            expected = _host_scaled_crops(clips, length, np.random.default_rng(seed), (factor, factor), 1.0, pad_mode)
            assert np.array_equal(gather_scaled_crop(torch.from_numpy(window), crop).numpy(), expected)
            assert window.shape[1] == math.ceil(length / min(factor, 1.0)) + 2 and np.all(crop.factor == factor)


def test_trainer_gathers_the_authors_crops_before_augmenting() -> None:
    """Trainer.prepare turns a loader part of windows into the crops (here with no other augmentation)."""
    augment_cfg = {"mixup": False, "gain": False, "time_scale": True, "order": "authors", "p": 1.0}
    spec = ModelSpec(family="envnet", crop=1000, batch=6, augment=augment_cfg, arch={"width": 0.25, "hidden": 16})
    trainer = Trainer(spec, build_network(spec, 5), torch.device("cpu"))
    rng = np.random.default_rng(0)
    clips = [rng.integers(-32768, 32768, size=n).astype(np.int16) for n in (1, 300, 999, 1000, 5000, 40_000)]
    window, crop = scaled_crop_windows(clips, 1000, np.random.default_rng(4), spec.augment_config().scale_range)
    part = Part(window, None, np.eye(6, 5, dtype=np.float32), crop)
    x, y = trainer.prepare(part, _gen())
    expected = _host_scaled_crops(clips, 1000, np.random.default_rng(4), (0.8, 1.25), 1.0, "zero")
    assert torch.equal(x, torch.from_numpy(expected)) and torch.equal(y, torch.eye(6, 5))


def test_authors_order_scales_on_the_loader_and_gains_every_sample() -> None:
    cfg = WaveAugmentConfig(mixup=False, order="authors", p=1.0)
    assert cfg.scales_on_loader and not WaveAugmentConfig().scales_on_loader
    assert not WaveAugmentConfig(order="authors", time_scale=False).scales_on_loader
    wave = torch.rand(64, 500, generator=_gen()) + 0.1
    out, _ = augment_wave(wave, torch.zeros(64, 2), cfg, _gen(3))
    ratio = out / wave
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))  # a gain only: no time scaling of the crop
    assert (ratio[:, 0] != 1).all() and (20 * torch.log10(ratio[:, 0])).abs().max() <= 6 + 1e-4
    half, _ = augment_wave(wave, torch.zeros(64, 2), WaveAugmentConfig(mixup=False, order="authors"), _gen(3))
    assert 10 < int(((half / wave)[:, 0] == 1).sum()) < 54  # p = 0.5 leaves some samples as they are
    only_scale = WaveAugmentConfig(mixup=False, gain=False, order="authors", p=1.0)
    assert torch.equal(augment_wave(wave, torch.zeros(64, 2), only_scale, _gen())[0], wave)


def test_wave_config_rejects_unknown_order_and_mixup_mode() -> None:
    with pytest.raises(FsdError):
        WaveAugmentConfig(order="scale_first")
    with pytest.raises(FsdError):
        WaveAugmentConfig(mixup_mode="cutmix")


def _bc_gain_reference(x: np.ndarray) -> float:
    """BC learning's gain in float64, written as the definition: max over windows of mean power in dB."""
    powers = [np.mean(x[i : i + BC_WINDOW] ** 2) for i in range(0, len(x) - BC_WINDOW + 1, BC_HOP)]
    return 10 * np.log10(max(max(powers), 10 ** (BC_MIN_DB / 10)))


def test_bc_mixup_matches_a_float64_reference() -> None:
    n = 12_000
    t = np.arange(n) / 44_100
    waves = np.stack([
        0.5 * np.sin(2 * np.pi * 440 * t),
        0.02 * np.sin(2 * np.pi * 1000 * t + 1.0),
        np.where((t > 0.1) & (t < 0.12), 0.8, 0.001) * np.sign(np.sin(2 * np.pi * 200 * t)),
        0.1 * np.cos(2 * np.pi * 60 * t),
        np.zeros(n),
    ])
    batch = len(waves)
    mixed, targets = bc_mixup(torch.tensor(waves, dtype=torch.float32), torch.eye(batch), 1.0, 1.0, _gen(4))
    gains = [_bc_gain_reference(w) for w in waves]
    for i in range(batch):
        r = float(targets[i, i])
        others = targets[i].clone()
        others[i] = 0
        j = int(others.argmax())
        assert j != i and 0 < r < 1 and math.isclose(float(targets[i, j]), 1 - r, rel_tol=1e-6)
        ratio = 1 / (1 + 10 ** ((gains[i] - gains[j]) / 20) * (1 - r) / r)
        expected = (ratio * waves[i] + (1 - ratio) * waves[j]) / np.sqrt(ratio**2 + (1 - ratio) ** 2)
        assert np.allclose(mixed[i].numpy(), expected, rtol=1e-4, atol=1e-6)
        assert torch.isfinite(mixed[i]).all()


def test_bc_mixup_equal_gains_mix_by_r_and_silence_stays_finite() -> None:
    wave = torch.full((4, 5000), 0.25)
    wave[2:] = 0.0
    mixed, targets = bc_mixup(wave, torch.eye(4), 1.0, 1.0, _gen(1))
    assert torch.isfinite(mixed).all() and torch.isfinite(targets).all()
    gains = [20 * math.log10(0.25)] * 2 + [BC_MIN_DB] * 2  # silence sits at the floor
    partners = [int(targets[i].index_fill(0, torch.tensor([i]), 0).argmax()) for i in range(4)]
    assert partners[0] >= 2 or partners[1] >= 2  # this seed pairs a loud clip with a silent one
    for i, j in enumerate(partners):
        r = float(targets[i, i])
        ratio = 1 / (1 + 10 ** ((gains[i] - gains[j]) / 20) * (1 - r) / r)  # r itself for equal gains
        expected = (ratio * wave[i] + (1 - ratio) * wave[j]) / math.sqrt(ratio**2 + (1 - ratio) ** 2)
        assert torch.allclose(mixed[i], expected, rtol=1e-4, atol=1e-9)
    silent, _ = bc_mixup(torch.zeros(3, 5000), torch.eye(3), 1.0, 1.0, _gen())
    assert torch.equal(silent, torch.zeros(3, 5000))
    one, one_targets = bc_mixup(wave[:1], torch.eye(4)[:1], 1.0, 1.0, _gen())
    assert torch.equal(one, wave[:1]) and torch.equal(one_targets, torch.eye(4)[:1])


def test_bc_mode_in_augment_wave() -> None:
    wave = torch.rand(B, 6000, generator=_gen()) - 0.5
    cfg = WaveAugmentConfig(time_scale=False, gain=False, mixup_mode="bc", p=1.0)
    ours = augment_wave(wave, torch.eye(B), cfg, _gen(5))
    direct = bc_mixup(wave, torch.eye(B), 1.0, cfg.mixup_alpha, _gen(5))
    linear = augment_wave(wave, torch.eye(B), WaveAugmentConfig(time_scale=False, gain=False, p=1.0), _gen(5))
    assert torch.equal(ours[0], direct[0]) and torch.equal(ours[1], direct[1])
    assert torch.equal(ours[1], linear[1]) and not torch.allclose(ours[0], linear[0])  # same pairs and r
