"""The demo dataset: a synthetic FSDKaggle2019-layout root whose classes are distinct sound types.

It stands in for the real data on this CPU-only machine (docs/method.md §10): curated and test clips are
clean and reliably labelled; noisy clips come from a shifted domain and carry partly wrong labels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

from fsdlib.audio import SAMPLE_RATE
from fsdlib.errors import FsdError
from fsdlib.layout import FOLDERS, LICENSES, Row, new_root, write_csvs, write_wav
from fsdlib.vocabulary import CLASSES_80

_N_BANDS = 8
_LOWEST_CENTRE_HZ = 200.0
_BAND_STEP_OCTAVES = 0.7
_JITTER_OCTAVES = 0.2
_TOP_HZ = 18_000.0


@dataclass(frozen=True)
class SynthConfig:
    """Size and character of the demo dataset; every clip is a pure function of these and the seed."""

    seed: int = 0
    n_classes: int = 10
    n_curated: int = 300
    n_noisy: int = 600
    n_test: int = 200
    curated_duration: tuple[float, float] = (0.3, 6.0)
    noisy_duration: tuple[float, float] = (1.0, 6.0)
    test_duration: tuple[float, float] = (0.3, 6.0)
    max_labels: int = 3
    label_noise: float = 0.4
    domain_shift: float = 1.0
    public_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise FsdError(f"synth seed must be >= 0, got {self.seed}")
        if not 1 <= self.n_classes <= len(CLASSES_80):
            raise FsdError(f"synth n_classes must be between 1 and {len(CLASSES_80)}, got {self.n_classes}")
        for name in ("n_curated", "n_noisy", "n_test"):
            if getattr(self, name) < 0:
                raise FsdError(f"synth {name} must be >= 0, got {getattr(self, name)}")
        for name in ("curated_duration", "noisy_duration", "test_duration"):
            value = getattr(self, name)
            if len(value) != 2:
                raise FsdError(f"synth {name} must be [min, max] seconds, got {list(value)}")
            lo, hi = float(value[0]), float(value[1])
            if not 0.05 <= lo <= hi <= 60:
                raise FsdError(f"synth {name} must satisfy 0.05 <= min <= max <= 60 seconds, got [{lo}, {hi}]")
            object.__setattr__(self, name, (lo, hi))
        if self.max_labels < 1:
            raise FsdError(f"synth max_labels must be >= 1, got {self.max_labels}")
        for name in ("label_noise", "domain_shift", "public_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise FsdError(f"synth {name} must be between 0 and 1, got {getattr(self, name)}")

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, a prefix of the official vocabulary."""
        return CLASSES_80[: self.n_classes]


@dataclass(frozen=True)
class DemoClip:
    """One planned clip: what is in its audio (`true_labels`) and what its CSV row says (`labels`)."""

    subset: str
    fname: str
    n_samples: int
    true_labels: tuple[int, ...]
    labels: tuple[int, ...]
    usage: str = ""
    freesound_id: int = 0
    license: str = ""
    silent: bool = False


# --------------------------------------------------------------------------- sound types
# Each generator returns `n` samples of one event of its type around centre frequency `f`
# (already jittered per clip); the caller normalises the peak and applies the fade envelope.


def _time(n: int) -> np.ndarray:
    return np.arange(n) / SAMPLE_RATE


def _bandpass(x: np.ndarray, lo: float, hi: float, order: int = 2) -> np.ndarray:
    hi = min(hi, 0.95 * SAMPLE_RATE / 2)
    lo = min(max(lo, 20.0), 0.8 * hi)
    sos = signal.butter(order, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return signal.sosfilt(sos, x)


def _onsets(rng: np.random.Generator, n: int, mean_gap: float, jitter: float) -> np.ndarray:
    """Sample indices of repeated hits, the first at 0, gaps around `mean_gap` seconds."""
    count = int(n / ((1 - jitter) * mean_gap * SAMPLE_RATE)) + 2
    gaps = mean_gap * (1 + jitter * rng.uniform(-1, 1, count))
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    idx = np.round(times * SAMPLE_RATE).astype(np.int64)
    return idx[idx < n]


def _strike(n: int, onsets: np.ndarray, amps: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    pulses = np.zeros(n)
    pulses[onsets] = amps
    return signal.oaconvolve(pulses, kernel)[:n]


def _vibrato_tone(rng: np.random.Generator, n: int, f: float, _: int) -> np.ndarray:
    t = _time(n)
    rate, depth = rng.uniform(4, 8), rng.uniform(0.01, 0.03)
    return np.sin(2 * np.pi * f * t - (f * depth / rate) * np.cos(2 * np.pi * rate * t))


def _harmonic_stack(rng: np.random.Generator, n: int, f: float, _: int) -> np.ndarray:
    t = _time(n)
    n_harm = rng.integers(4, 10)
    ranks = np.arange(1, n_harm + 1)
    ranks = ranks[ranks * f < _TOP_HZ]
    amps = ranks ** -rng.uniform(0.4, 1.4)
    phases = rng.uniform(0, 2 * np.pi, len(ranks))
    x = np.zeros(n)
    for rank, amp, phase in zip(ranks, amps, phases, strict=True):
        x += amp * np.sin(2 * np.pi * f * rank * t + phase)
    return x


def _noise_bursts(rng: np.random.Generator, n: int, f: float, _: int) -> np.ndarray:
    t = _time(n)
    burst, gap = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3)
    local = np.mod(t + rng.uniform(0, burst + gap), burst + gap)
    gate = np.where(local < burst, np.sin(np.pi * np.minimum(local / burst, 1)) ** 2, 0.0)
    return gate * _bandpass(rng.standard_normal(n), f * 2 ** (-1 / 6), f * 2 ** (1 / 6))


def _click_train(rng: np.random.Generator, n: int, f: float, _: int) -> np.ndarray:
    tau = rng.uniform(0.002, 0.006)
    k = _time(int(5 * tau * SAMPLE_RATE))
    kernel = np.exp(-k / tau) * np.sin(2 * np.pi * f * k)
    onsets = _onsets(rng, n, 1 / rng.uniform(5, 25), 0.1)
    return _strike(n, onsets, rng.uniform(0.7, 1.0, len(onsets)), kernel)


def _chirp(rng: np.random.Generator, n: int, f: float, up: bool) -> np.ndarray:
    t = _time(n)
    period = rng.uniform(0.15, 0.6)
    local = np.mod(t, period)
    ratio = 2.0 if up else 0.5
    start = f / np.sqrt(ratio)
    phase = 2 * np.pi * start * period / np.log(ratio) * (ratio ** (local / period) - 1)
    return np.sin(np.pi * local / period) ** 2 * np.sin(phase)


def _chirp_up(rng: np.random.Generator, n: int, f: float, _: int) -> np.ndarray:
    return _chirp(rng, n, f, up=True)


def _chirp_down(rng: np.random.Generator, n: int, f: float, _: int) -> np.ndarray:
    return _chirp(rng, n, f, up=False)


def _am_tone(rng: np.random.Generator, n: int, f: float, _: int) -> np.ndarray:
    t = _time(n)
    rate, depth = rng.uniform(10, 40), rng.uniform(0.7, 1.0)
    return (1 - depth / 2 * (1 - np.cos(2 * np.pi * rate * t))) * np.sin(2 * np.pi * f * t)


def _fm_tone(rng: np.random.Generator, n: int, f: float, _: int) -> np.ndarray:
    t = _time(n)
    mod_f, index = f * rng.uniform(0.1, 0.25), rng.uniform(3, 8)
    return np.sin(2 * np.pi * f * t + index * np.sin(2 * np.pi * mod_f * t))


def _thump(rng: np.random.Generator, n: int, f: float, _: int) -> np.ndarray:
    tau = rng.uniform(0.04, 0.15)
    k = _time(int(5 * tau * SAMPLE_RATE))
    pitch = f * (1 + np.exp(-k / 0.03))
    kernel = np.exp(-k / tau) * np.sin(2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE)
    onsets = _onsets(rng, n, 1 / rng.uniform(1.5, 5), 0.4)
    return _strike(n, onsets, rng.uniform(0.6, 1.0, len(onsets)), kernel)


def _crackle(rng: np.random.Generator, n: int, f: float, _: int) -> np.ndarray:
    density = rng.uniform(30, 300) / SAMPLE_RATE
    pulses = (rng.random(n) < density) * rng.choice([-1.0, 1.0], n) * np.exp(rng.uniform(-2, 0, n))
    return _bandpass(pulses, f / 2, f * 2)


def _metallic(rng: np.random.Generator, n: int, f: float, class_index: int) -> np.ndarray:
    ratios = 1 + np.cumsum(np.random.default_rng([7919, class_index]).uniform(0.6, 2.2, 5))
    ratios = np.concatenate([[1.0], ratios])
    ratios = ratios[ratios * f < _TOP_HZ]
    tau = rng.uniform(0.2, 0.8)
    k = _time(min(n, int(3 * tau * SAMPLE_RATE)))
    kernel = np.zeros(len(k))
    for rank, ratio in enumerate(ratios):
        kernel += np.exp(-k * (1 + rank) / tau) * np.sin(2 * np.pi * f * ratio * k + rng.uniform(0, 2 * np.pi))
    onsets = _onsets(rng, n, rng.uniform(0.3, 1.0), 0.3)
    return _strike(n, onsets, rng.uniform(0.6, 1.0, len(onsets)), kernel)


SoundType = Callable[[np.random.Generator, int, float, int], np.ndarray]
SOUND_TYPES: dict[str, SoundType] = {
    "vibrato_tone": _vibrato_tone,
    "harmonic_stack": _harmonic_stack,
    "noise_bursts": _noise_bursts,
    "click_train": _click_train,
    "chirp_up": _chirp_up,
    "chirp_down": _chirp_down,
    "am_tone": _am_tone,
    "fm_tone": _fm_tone,
    "thump": _thump,
    "crackle": _crackle,
    "metallic": _metallic,
}


def class_sound(class_index: int) -> tuple[str, float]:
    """The sound type and centre frequency (Hz) of a class: types cycle, bands keep same-type classes apart."""
    names = list(SOUND_TYPES)
    kind, band = class_index % len(names), class_index // len(names)
    centre = (band + 3 * kind) % _N_BANDS
    return names[kind], _LOWEST_CENTRE_HZ * 2 ** (_BAND_STEP_OCTAVES * centre)


# --------------------------------------------------------------------------- planning


def _label_count_probs(max_labels: int) -> np.ndarray:
    """Most clips carry one label; the rest 2..max_labels, each half as likely as the previous."""
    if max_labels == 1:
        return np.ones(1)
    rest = 0.5 ** np.arange(max_labels - 1)
    return np.concatenate([[0.7], 0.3 * rest / rest.sum()])


def _unique_fnames(rng: np.random.Generator, count: int) -> list[str]:
    seen: set[int] = set()
    ids: list[int] = []
    while len(ids) < count:
        for value in rng.integers(0, 16**8, size=count - len(ids)).tolist():
            if value not in seen:
                seen.add(value)
                ids.append(value)
    return [f"{value:08x}.wav" for value in ids]


def _corrupt(rng: np.random.Generator, labels: tuple[int, ...], n_classes: int, max_labels: int) -> tuple[int, ...]:
    """One random label error: drop a true label, add a wrong one, or swap one for a wrong one."""
    wrong = [c for c in range(n_classes) if c not in labels]
    ops = []
    if len(labels) > 1:
        ops.append("drop")
    if wrong and len(labels) < max_labels:
        ops.append("add")
    if wrong:
        ops.append("swap")
    if not ops:
        return labels
    op = ops[rng.integers(len(ops))]
    kept = list(labels)
    if op == "drop":
        kept.pop(rng.integers(len(kept)))
    elif op == "add":
        kept.append(wrong[rng.integers(len(wrong))])
    else:
        kept[rng.integers(len(kept))] = wrong[rng.integers(len(wrong))]
    return tuple(sorted(kept))


def _plan_subset(rng: np.random.Generator, cfg: SynthConfig, subset: str, fnames: list[str],
                 duration: tuple[float, float]) -> list[DemoClip]:
    n, n_classes = len(fnames), cfg.n_classes
    max_labels = min(cfg.max_labels, n_classes)
    primary = rng.permutation(np.resize(np.arange(n_classes), n))
    counts = rng.choice(np.arange(1, max_labels + 1), size=n, p=_label_count_probs(max_labels))
    lo, hi = (round(d * SAMPLE_RATE) for d in duration)
    lengths = np.clip(np.round(rng.uniform(*duration, n) * SAMPLE_RATE), lo, hi).astype(int)
    clips = []
    for fname, first, count, length in zip(fnames, primary, counts, lengths, strict=True):
        others = [c for c in range(n_classes) if c != first]
        extra = rng.choice(others, size=count - 1, replace=False).tolist() if count > 1 else []
        labels = tuple(sorted([int(first), *extra]))
        clips.append(DemoClip(subset, fname, int(length), labels, labels))
    return clips


def plan_demo(cfg: SynthConfig) -> list[DemoClip]:
    """Every clip of the demo dataset with its true and written labels; generate_demo renders exactly this."""
    rng = np.random.default_rng([cfg.seed, 1])
    sizes = {"curated": cfg.n_curated, "noisy": cfg.n_noisy, "test": cfg.n_test}
    durations = {"curated": cfg.curated_duration, "noisy": cfg.noisy_duration, "test": cfg.test_duration}
    fnames = _unique_fnames(rng, sum(sizes.values()))
    plan: dict[str, list[DemoClip]] = {}
    start = 0
    for subset, size in sizes.items():
        plan[subset] = _plan_subset(rng, cfg, subset, fnames[start : start + size], durations[subset])
        start += size

    noisy = plan["noisy"]
    for i in rng.choice(len(noisy), size=round(cfg.label_noise * len(noisy)), replace=False):
        clip = noisy[i]
        noisy[i] = replace(clip, labels=_corrupt(rng, clip.true_labels, cfg.n_classes, cfg.max_labels))

    test = plan["test"]
    public = set(rng.choice(len(test), size=round(cfg.public_fraction * len(test)), replace=False).tolist())
    ids = rng.choice(900_000, size=len(test), replace=False) + 100_000
    for i, clip in enumerate(test):
        test[i] = replace(clip, usage="Public" if i in public else "Private", freesound_id=int(ids[i]),
                           license=LICENSES[rng.integers(len(LICENSES))])

    # The real data's quirks: an all-silent clip, and a clip shorter than half a second.
    silent_subset = "noisy" if noisy else "curated"
    if plan[silent_subset]:
        plan[silent_subset][0] = replace(plan[silent_subset][0], silent=True)
    for subset in ("curated", "test"):
        lo = durations[subset][0]
        if plan[subset] and lo < 0.5:
            clip = plan[subset][-1]
            plan[subset][-1] = replace(clip, n_samples=round(lo * SAMPLE_RATE))
            break
    return [clip for subset in sizes for clip in plan[subset]]


# --------------------------------------------------------------------------- rendering


def _event(rng: np.random.Generator, class_index: int, n: int) -> np.ndarray:
    """One peak-normalised event of a class with a short raised-cosine fade at both ends."""
    kind, centre = class_sound(class_index)
    f = centre * 2 ** rng.uniform(-_JITTER_OCTAVES, _JITTER_OCTAVES)
    x = SOUND_TYPES[kind](rng, n, f, class_index)
    peak = np.max(np.abs(x))
    if peak > 0:
        x = x / peak
    fade = max(1, min(n // 4, int(rng.uniform(0.005, 0.03) * SAMPLE_RATE)))
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    x[:fade] *= ramp
    x[n - fade :] *= ramp[::-1]
    return x


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if x.size else 0.0


def _log_lerp(a: float, b: float, weight: float) -> float:
    return math.exp((1 - weight) * math.log(a) + weight * math.log(b))


def _domain_shift(rng: np.random.Generator, x: np.ndarray, strength: float) -> np.ndarray:
    """The noisy subset's recording chain, scaled by strength: reverb, background noise, band limiting.

    All three act in one FFT: reverb multiplies by the spectrum of an exponentially decaying noise
    impulse response, pink-to-brown noise is added as a shaped random spectrum, and zero-phase
    Butterworth magnitudes limit the band of both.
    """
    n, level = len(x), _rms(x)
    rt60 = rng.uniform(0.2, 1.0)
    t = _time(int(rt60 * SAMPLE_RATE))
    impulse = (rng.standard_normal(len(t), np.float32) * np.exp(-6.9 * t / rt60)).astype(np.float32)
    impulse /= np.sqrt(np.sum(impulse**2))
    size = sp_fft.next_fast_len(n + len(t), real=True)
    freqs = np.maximum(sp_fft.rfftfreq(size, 1 / SAMPLE_RATE), 20.0).astype(np.float32)
    wet = strength * rng.uniform(0.3, 1.0)
    spectrum = sp_fft.rfft(x.astype(np.float32), size) * (1 + wet * sp_fft.rfft(impulse, size))

    shape = freqs ** np.float32(-rng.uniform(1, 2) / 2)
    noise = shape * (rng.standard_normal(len(freqs), np.float32) + 1j * rng.standard_normal(len(freqs), np.float32))
    noise_rms = 2 * np.sqrt(np.sum(shape**2)) / size
    snr_db = rng.uniform(0, 15)
    spectrum += noise * (strength * level * 10 ** (-snr_db / 20) / noise_rms)

    low_pass = _log_lerp(20_000, rng.uniform(2_500, 12_000), strength)
    high_pass = _log_lerp(20, rng.uniform(100, 600), strength)
    spectrum /= np.sqrt((1 + (freqs / np.float32(low_pass)) ** 8) * (1 + (np.float32(high_pass) / freqs) ** 4))
    return sp_fft.irfft(spectrum, size)[:n]


def render_clip(clip: DemoClip, cfg: SynthConfig) -> np.ndarray:
    """The int16 waveform of a planned clip: a pure function of the clip and the seed, so any order gives the same bytes."""
    n = clip.n_samples
    if clip.silent:
        return np.zeros(n, np.int16)
    rng = np.random.default_rng([cfg.seed, 2, int(clip.fname[:8], 16)])
    x = np.zeros(n)
    min_event = min(n, int(0.25 * SAMPLE_RATE))
    for j, class_index in enumerate(clip.true_labels):
        length = max(min_event, int(n * rng.uniform(0.5, 1.0)))
        onset = int(rng.integers(0, n - length + 1))
        gain = 1.0 if j == 0 else 10 ** (rng.uniform(-8, 0) / 20)
        x[onset : onset + length] += gain * _event(rng, class_index, length)
    if clip.subset == "noisy" and cfg.domain_shift > 0:
        x = _domain_shift(rng, x, cfg.domain_shift)
    x = x + np.max(np.abs(x)) * 10 ** (-rng.uniform(40, 55) / 20) * rng.standard_normal(n)
    peak_dbfs = rng.uniform(-30, -3)
    x *= 10 ** (peak_dbfs / 20) / max(np.max(np.abs(x)), 1e-12)
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- writing


def _rows(plan: list[DemoClip], subset: str, classes: tuple[str, ...]) -> list[Row]:
    """A subset's CSV rows, sorted by file name."""
    clips = sorted((c for c in plan if c.subset == subset), key=lambda c: c.fname)
    return [Row(c.fname, tuple(classes[i] for i in c.labels), c.usage, c.freesound_id, c.license) for c in clips]


def generate_demo(root: Path, cfg: SynthConfig, progress: bool = True) -> None:
    """Write the demo dataset as a complete FSDKaggle2019 root; `root` is replaced only when all is written."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    plan = plan_demo(cfg)
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with new_root(root) as tmp, Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("demo audio", total=len(plan))

        def write(clip: DemoClip) -> None:
            write_wav(tmp / FOLDERS[clip.subset] / clip.fname, render_clip(clip, cfg))

        # Clips are independent and numpy/scipy release the GIL, so threads use both cores.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for _ in pool.map(write, plan):
                bar.advance(task)
        write_csvs(tmp, cfg.classes, *(_rows(plan, subset, cfg.classes) for subset in ("curated", "noisy", "test")))
