"""Write the field dataset: a second FSDKaggle2019-layout root, made by physically-motivated synthesis.

It checks results obtained on the demo data (fsdlib/synth.py) on data made another way: other sound
sources (plucked strings, bells, voices, engines, footsteps, ...), another noisy recording chain and
another label corruption, all a pure function of --seed.

    python scripts/make_field_dataset.py OUT_DIR [--seed 0] [--scale 1.0]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from fsdlib.layout import FOLDERS, LICENSES, Row, new_root, write_csv, write_csvs, write_wav
from fsdlib.vocabulary import CLASSES_80

SR = 44_100
PART_CODES = {"curated": 1, "noisy": 2, "test": 3}
COUNTS = {"curated": 200, "noisy": 350, "test": 150}
DURATIONS = {"curated": (0.5, 8.0), "noisy": (1.0, 8.0), "test": (0.5, 8.0)}
MULTI_LABEL_SHARE = 0.27
THREE_LABEL_SHARE = 0.25  # of the multi-label clips
WRONG_LABEL_SHARE = 0.35  # noisy clips whose labels are replaced or extended
SHORT_SHARE = 0.03  # clips forced to 0.3–0.5 s, at least one per curated and test part
PUBLIC_SHARE = 0.25
PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])
VOWELS = np.array([(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
                   (570, 840, 2410), (660, 1720, 2410), (520, 1190, 2390), (440, 1020, 2240)], dtype=float)
BELL_RATIOS = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.51, 2.66, 3.01, 4.16])
CHORDS = ((0, 7, 12, 16, 19, 24), (0, 7, 12, 15, 19, 24), (0, 5, 10, 15, 19, 24), (0, 7, 10, 16, 19), (0, 4, 7, 12))


# --------------------------------------------------------------------------- building blocks


def _n(seconds: float) -> int:
    return max(1, int(round(seconds * SR)))


def _t(n: int) -> np.ndarray:
    return np.arange(n) / SR


def _band(x: np.ndarray, lo: float | None, hi: float | None, order: int = 2) -> np.ndarray:
    """Butterworth high-, low- or band-pass (None leaves that side open)."""
    hi = None if hi is None else min(hi, 0.45 * SR)
    if lo is not None and hi is not None:
        sos = signal.butter(order, [lo, hi], btype="bandpass", fs=SR, output="sos")
    elif lo is not None:
        sos = signal.butter(order, lo, btype="highpass", fs=SR, output="sos")
    else:
        sos = signal.butter(order, hi, btype="lowpass", fs=SR, output="sos")
    return signal.sosfilt(sos, x)


def _resonators(freqs: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Cascade of two-pole resonators with zeros at DC and Nyquist (peak gain about 1 each), as SOS rows."""
    rows = []
    for f, bw in zip(np.atleast_1d(freqs), np.atleast_1d(bandwidths), strict=True):
        r = np.exp(-np.pi * bw / SR)
        theta = 2 * np.pi * min(f, 0.45 * SR) / SR
        gain = (1 - r * r) / 2
        rows.append([gain, 0.0, -gain, 1.0, -2 * r * np.cos(theta), r * r])
    return np.array(rows)


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    return signal.lfilter(PINK_B, PINK_A, rng.standard_normal(n))


def _brown(rng: np.random.Generator, n: int) -> np.ndarray:
    x = signal.lfilter([1.0], [1.0, -0.997], rng.standard_normal(n))
    return x - x.mean()


def _wander(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """A slow random control signal in about [-1, 1]: random knots `rate` per second, linearly joined."""
    knots = max(2, int(n / SR * rate) + 2)
    return np.interp(np.arange(n), np.linspace(0, n, knots), rng.uniform(-1, 1, knots))


def _times(rng: np.random.Generator, n: int, rate: float, regularity: float, lead: float = 1.0) -> np.ndarray:
    """Event onsets (samples) with gamma-distributed gaps: regularity 1 is Poisson, large values near-periodic.

    The first onset falls within `lead` gaps of the start, so even a short clip holds an event.
    """
    count = int(n / SR * rate * 1.5) + 4
    gaps = rng.gamma(regularity, 1 / (rate * regularity), count)
    onsets = rng.uniform(0, lead) * min(gaps[0], 0.5 * n / SR) + np.concatenate([[0.0], np.cumsum(gaps[1:])])
    idx = (onsets * SR).astype(np.int64)
    return idx[idx < n]


def _add(out: np.ndarray, onset: int, sound: np.ndarray, gain: float = 1.0) -> None:
    end = min(len(out), onset + len(sound))
    if end > onset:
        out[onset:end] += gain * sound[: end - onset]


def _trains(n: int, onsets: np.ndarray, amps: np.ndarray, kernels: list[np.ndarray], which: np.ndarray) -> np.ndarray:
    """Many short events at once: event i adds amps[i] * kernels[which[i]] at onsets[i] (one weighted bincount)."""
    width = max(len(k) for k in kernels)
    bank = np.zeros((len(kernels), width))
    for k, kernel in enumerate(kernels):
        bank[k, : len(kernel)] = kernel
    index = onsets[:, None] + np.arange(width)
    weights = amps[:, None] * bank[which]
    return np.bincount(index.ravel(), weights.ravel(), minlength=n + width)[:n]


def _hiss(rng: np.random.Generator, n: int, centre: float, bandwidth: float) -> np.ndarray:
    """Differenced white noise through one resonator: a cheap band of noise for clicks, splashes and fricatives."""
    white = np.diff(rng.standard_normal(n + 1))
    return signal.sosfilt(_resonators(np.array([centre]), np.array([bandwidth])), white)


def _click(rng: np.random.Generator, seconds: float, centre: float, bandwidth: float, tau: float) -> np.ndarray:
    """A band of noise decaying with time constant tau: the attack of impacts, splashes and steps."""
    n = _n(seconds)
    return _hiss(rng, n, centre, bandwidth) * np.exp(-_t(n) / tau)


def _damped(freqs: np.ndarray, t60s: np.ndarray, amps: np.ndarray, n: int, phases: np.ndarray | None = None) -> np.ndarray:
    """Modal synthesis: a sum of exponentially damped sinusoids."""
    t = _t(n).astype(np.float32)
    out = np.zeros(n, np.float32)
    phases = np.zeros(len(freqs)) if phases is None else phases
    for f, t60, a, p in zip(freqs, t60s, amps, phases, strict=True):
        if f < 0.45 * SR:
            out += np.float32(a) * np.exp(np.float32(-6.9 / t60) * t) * np.sin(np.float32(2 * np.pi * f) * t + np.float32(p))
    return out.astype(np.float64)


def _burst(rng: np.random.Generator, seconds: float, tau: float) -> np.ndarray:
    """White noise with an exponential decay of time constant tau."""
    n = _n(seconds)
    return rng.standard_normal(n) * np.exp(-_t(n) / tau)


def _pluck(rng: np.random.Generator, f: float, length: int, t60: float, brightness: float) -> np.ndarray:
    """Karplus–Strong string, run one period per numpy step: y[n] = x[n] + rho/2 (y[n-P] + y[n-P-1])."""
    period = max(2, int(round(SR / f)))
    rho = 10 ** (-3 / (t60 * SR / period))
    exc = signal.lfilter([1 - brightness], [1, -brightness], rng.uniform(-1, 1, period))
    exc = exc - np.roll(exc, int(period * rng.uniform(0.1, 0.3)))  # plucking position
    blocks = length // period + 2
    y = np.zeros(blocks * period + 1)  # y[0] is the zero before the string starts
    y[1 : period + 1] = exc
    for k in range(1, blocks):
        s = 1 + k * period
        y[s : s + period] = 0.5 * rho * (y[s - period : s] + y[s - period - 1 : s - 1])
    return y[1 : length + 1]


# --------------------------------------------------------------------------- the sound sources


def acoustic_guitar(rng: np.random.Generator, n: int) -> np.ndarray:
    """Plucked strings: strummed chords or picked notes of a chord, through a wooden body."""
    root = 82.4 * 2 ** (rng.integers(0, 15) / 12)
    chord = np.array(CHORDS[rng.integers(len(CHORDS))])
    t60, bright = rng.uniform(0.8, 4.0), rng.uniform(0.05, 0.75)
    strum = rng.random() < 0.5
    out = np.zeros(n)
    hits = _times(rng, n, rng.uniform(0.7, 2.0) if strum else rng.uniform(2.5, 8.0), rng.uniform(3, 20), lead=0.2)
    for onset in hits:
        if strum:
            notes = chord if rng.random() < 0.6 else chord[::-1]
            delays = np.cumsum(rng.uniform(0.006, 0.035, len(notes)))
        else:
            notes, delays = [rng.choice(chord) + 12 * rng.integers(0, 2)], [0.0]
        for semi, delay in zip(notes, delays, strict=True):
            start = onset + int(delay * SR)
            length = min(n - start, _n(min(t60, 2.0)))
            if length > 0:
                string = _pluck(rng, root * 2 ** (semi / 12), length, t60, bright)
                out[start : start + length] += rng.uniform(0.5, 1.0) * string
    body = _resonators(np.array([rng.uniform(90, 120), rng.uniform(180, 250), rng.uniform(380, 520)]),
                       np.array([20.0, 40.0, 80.0]))
    return out + rng.uniform(0.5, 3.0) * signal.sosfilt(body, out)


def church_bell(rng: np.random.Generator, n: int) -> np.ndarray:
    """One or two swinging bells: inharmonic damped partials (hum, prime, tierce, quint, nominal...) with beats."""
    out = np.zeros(n)
    interval = rng.uniform(0.9, 2.5)
    for bell in range(1 + (rng.random() < 0.3)):
        prime = rng.uniform(180, 700)
        ratios = BELL_RATIOS * (1 + rng.normal(0, 0.015, len(BELL_RATIOS)))
        doublets = ratios * (1 + rng.uniform(0.001, 0.005, len(ratios)))
        t60 = rng.uniform(2, 6) * ratios ** -0.8
        amps = rng.uniform(0.2, 1.0, len(ratios)) / np.sqrt(np.arange(1, len(ratios) + 1))
        length = min(n, _n(4.0))
        freqs = prime * np.concatenate([ratios, doublets])
        kernel = _damped(freqs, np.tile(t60, 2), np.tile(amps, 2), length, rng.uniform(0, 2 * np.pi, 2 * len(ratios)))
        clang = _band(_burst(rng, 0.02, 0.004), 1500, 8000)
        _add(kernel, 0, clang, 0.3 * np.max(np.abs(kernel)))
        hits = _times(rng, n, 1 / interval, 40, lead=0.2 if bell == 0 else 1.0)
        for onset in hits:
            _add(out, onset, kernel, rng.uniform(0.7, 1.0) * (0.6 if bell else 1.0))
    return out


def _bubble(rng: np.random.Generator, f0: float, tau: float, rise: float) -> np.ndarray:
    """A water drop's bubble: a decaying sinusoid whose pitch rises as it nears the surface."""
    t = _t(_n(6 * tau))
    return np.exp(-t / tau) * np.sin(2 * np.pi * f0 * (t + 0.5 * rise * t * t))


def drip(rng: np.random.Generator, n: int) -> np.ndarray:
    """Single drops, Poisson or tap-regular, each a rising bubble plus a tiny splash, maybe in a resonant basin."""
    centre = rng.uniform(500, 2500)
    rise = rng.uniform(5, 40)
    hits = _times(rng, n, rng.uniform(0.7, 5.0), rng.choice([1.0, 30.0]), lead=0.3)
    out = np.zeros(n)
    for onset in hits:
        drop = _bubble(rng, centre * 2 ** rng.normal(0, 0.15), rng.uniform(0.006, 0.03), rise)
        _add(drop, 0, _click(rng, 0.004, 6000, 4000, 0.001), rng.uniform(0.05, 0.4))
        _add(out, onset, drop, rng.uniform(0.5, 1.0))
    if rng.random() < 0.5:
        basin = _resonators(np.array([rng.uniform(150, 900)]), np.array([rng.uniform(8, 30)]))
        out += rng.uniform(0.3, 1.5) * signal.sosfilt(basin, out)
    return out


def stream(rng: np.random.Generator, n: int) -> np.ndarray:
    """Running water: a band-limited pink bed with slow swells under a dense layer of small bubbles."""
    bed = _band(_pink(rng, n), rng.uniform(150, 600), rng.uniform(2000, 9000))
    bed *= 1 + rng.uniform(0.1, 0.6) * _wander(rng, n, rng.uniform(0.5, 4))
    kernels = [_bubble(rng, rng.uniform(600, 4000), rng.uniform(0.002, 0.012), rng.uniform(10, 80)) for _ in range(8)]
    onsets = _times(rng, n, rng.uniform(20, 250), 1.0)
    bubbles = _trains(n, onsets, rng.uniform(0.2, 1.0, len(onsets)), kernels, rng.integers(0, 8, len(onsets)))
    scale = np.std(bubbles) / max(np.std(bed), 1e-12)
    return bubbles + rng.uniform(0.5, 3.0) * scale * bed


def _rpm_path(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float, float]:
    """Engine speed over the clip: revving in neutral, or accelerating through gears."""
    idle, peak = rng.uniform(700, 1300), rng.uniform(3000, 7500)
    seconds = n / SR
    if rng.random() < 0.5:
        times, values, t = [0.0], [idle], rng.uniform(0.0, 0.3)
        while t < seconds:
            up, hold, down = rng.uniform(0.25, 0.8), rng.uniform(0.0, 0.4), rng.uniform(0.5, 1.5)
            top = rng.uniform(0.6, 1.0) * peak
            times += [t, t + up, t + up + hold, t + up + hold + down]
            values += [idle, top, top, idle]
            t += up + hold + down + rng.uniform(0.1, 1.0)
    else:
        times, values, t, low = [0.0], [idle], 0.0, idle
        while t < seconds:
            climb = rng.uniform(1.0, 3.0)
            times += [t + climb, t + climb + 0.15]
            values += [peak, 0.55 * peak]
            t, low = t + climb + 0.15, 0.55 * peak
        values[-1] = low
    rpm = np.interp(_t(n), times, values) * (1 + 0.02 * _wander(rng, n, 3))
    return rpm, idle, peak


def accelerating_and_revving_and_vroom(rng: np.random.Generator, n: int) -> np.ndarray:
    """Combustion engine: a firing pulse train whose rate follows the RPM, cycle-to-cycle jitter, exhaust resonances."""
    cylinders = rng.choice([2, 4, 6, 8])
    rpm, idle, peak = _rpm_path(rng, n)
    phase = np.cumsum(rpm / 60 * cylinders / 2) / SR
    cycle = phase.astype(np.int64)
    jitter = 1 + rng.uniform(0.1, 0.4) * rng.standard_normal(cycle[-1] + 1)
    pulses = np.exp(-(phase - cycle) * rng.uniform(4, 15)) * jitter[cycle]
    pulses = _band(pulses, 25, None)
    exhaust = _resonators(np.array([rng.uniform(100, 300), rng.uniform(600, 1500)]), np.array([60.0, 250.0]))
    throttle = np.clip((rpm - idle) / (peak - idle), 0, 1)
    hiss = _band(rng.standard_normal(n), 500, 4000) * throttle * rng.uniform(0.05, 0.3) * np.std(pulses)
    return (pulses + 4 * signal.sosfilt(exhaust, pulses) + hiss) * (0.3 + 0.7 * throttle)


def _step(rng: np.random.Generator, surface: str) -> np.ndarray:
    """One footfall on a surface: heel strike then a lighter toe or scuff."""
    heel = np.zeros(_n(0.3))
    if surface == "hard":
        _add(heel, 0, _click(rng, 0.03, rng.uniform(1500, 4000), 2500, rng.uniform(0.002, 0.005)))
        thud = _damped(np.array([rng.uniform(60, 160)]), np.array([rng.uniform(0.05, 0.12)]), np.array([1.0]), _n(0.2))
        _add(heel, 0, thud)
    elif surface == "wood":
        modes = rng.uniform(150, 500, 2)
        _add(heel, 0, _damped(modes, rng.uniform(0.05, 0.15, 2), rng.uniform(0.5, 1.0, 2), _n(0.2)))
        _add(heel, 0, _click(rng, 0.01, 4000, 4000, 0.002), 0.5)
    elif surface == "gravel":
        grains = _times(rng, _n(rng.uniform(0.08, 0.2)), rng.uniform(150, 500), 1.0)
        crunch = np.zeros(len(heel))
        crunch[grains] = rng.uniform(0.2, 1.0, len(grains)) * rng.choice([-1.0, 1.0], len(grains))
        grain = np.exp(-_t(_n(0.004)) / rng.uniform(0.0005, 0.002))
        crunch = np.convolve(crunch, grain)[: len(heel)]
        _add(heel, 0, signal.sosfilt(_resonators(np.array([rng.uniform(2500, 6000)]), np.array([4000.0])), crunch))
    else:
        env = np.minimum(_t(_n(0.2)) / 0.01, 1) * np.exp(-_t(_n(0.2)) / rng.uniform(0.03, 0.08))
        _add(heel, 0, _hiss(rng, len(env), rng.uniform(150, 700), rng.uniform(300, 900)) * env)
    toe = heel[: _n(0.15)] * rng.uniform(0.3, 0.7)
    _add(heel, _n(rng.uniform(0.04, 0.12)), toe)
    return heel


def walk_and_footsteps(rng: np.random.Generator, n: int) -> np.ndarray:
    """Footsteps at a walking tempo on hard floor, wood, gravel or carpet, left and right feet unequal."""
    surface = rng.choice(["hard", "wood", "gravel", "soft"])
    feet = rng.uniform(0.6, 1.0, 2)
    out = np.zeros(n)
    for i, onset in enumerate(_times(rng, n, rng.uniform(1.3, 2.4), rng.uniform(15, 60), lead=0.3)):
        _add(out, onset, _step(rng, surface), feet[i % 2] * rng.uniform(0.8, 1.0))
    return out


def _voice(rng: np.random.Generator, n: int, f0_range: tuple[float, float], formant_scale: float) -> np.ndarray:
    """Speech-like sound: a glottal pulse train with a falling phrase contour through per-syllable vowel formants.

    Syllables group into words and phrases separated by pauses; some syllables start with a fricative or a burst.
    """
    base = rng.uniform(*f0_range)
    scale = formant_scale * rng.uniform(0.94, 1.06)
    syllable_plan: list[tuple[int, int, int]] = []
    knots_t, knots_f = [0.0], [base]
    t, seconds = rng.uniform(0, 0.1), n / SR
    while t < seconds:
        start_f, end_f = base * rng.uniform(1.05, 1.3), base * rng.uniform(0.75, 0.95)
        phrase_start, syllables = t, []
        for _ in range(rng.integers(2, 9)):
            for _ in range(rng.integers(1, 4)):
                length = rng.uniform(0.09, 0.28)
                syllables.append((t, length))
                t += length
            t += rng.uniform(0.0, 0.12)
        for s, length in syllables:
            pos = (s - phrase_start) / max(t - phrase_start, 1e-3)
            knots_t.append(s + length / 2)
            knots_f.append((start_f + pos * (end_f - start_f)) * (1 + rng.uniform(0, 0.2) * (rng.random() < 0.3)))
            syllable_plan.append((int(s * SR), _n(length), int(rng.integers(len(VOWELS)))))
        t += rng.uniform(0.25, 0.9)
    f0 = np.interp(_t(n), knots_t, knots_f) * (1 + 0.015 * _wander(rng, n, 8))
    cycles = np.floor(np.cumsum(f0) / SR)
    source = np.zeros(n)
    source[1:][np.diff(cycles) > 0] = 1.0
    source = signal.lfilter([1.0, -0.98], [1.0, -1.9, 0.9025], source)  # glottal roll-off, then lip radiation
    out = np.zeros(n)
    pad = _n(0.02)
    for start, length, vowel in syllable_plan:
        if start >= n:
            break
        seg = np.zeros(length + pad)
        voiced = source[start : start + length]
        env = np.sin(np.pi * np.arange(len(voiced)) / max(len(voiced), 1)) ** 0.5
        seg[: len(voiced)] = voiced * env + 0.02 * rng.standard_normal(len(voiced)) * env
        formants = VOWELS[vowel] * scale * (1 + rng.normal(0, 0.04, 3))
        seg = signal.sosfilt(_resonators(formants, np.array([70.0, 100.0, 140.0]) * scale), seg)
        _add(out, start, seg)
        if rng.random() < 0.5 and start > 0:
            kind = rng.random()
            length_c = _n(rng.uniform(0.04, 0.12) if kind < 0.5 else 0.012)
            centre, bandwidth = (rng.uniform(2500, 7000), 2500) if kind < 0.5 else (1500, 3000)
            consonant = _hiss(rng, length_c, centre, bandwidth)
            consonant *= np.hanning(length_c) * rng.uniform(0.05, 0.3) * np.std(seg) / max(np.std(consonant), 1e-12) * 3
            _add(out, max(0, start - length_c), consonant)
    return out


def male_speech_and_man_speaking(rng: np.random.Generator, n: int) -> np.ndarray:
    """A low-pitched voice with adult male formants."""
    return _voice(rng, n, (85.0, 150.0), 1.0)


def female_speech_and_woman_speaking(rng: np.random.Generator, n: int) -> np.ndarray:
    """A higher-pitched voice with formants about 17 % higher."""
    return _voice(rng, n, (165.0, 260.0), 1.17)


def _song(rng: np.random.Generator, n: int) -> np.ndarray:
    """One bird: phrases of FM syllables (sweeps, hooks, trills) with a weak second harmonic."""
    kinds = []
    for _ in range(rng.integers(1, 4)):
        lo, hi = sorted(rng.uniform(1800, 8000, 2))
        start, end = (lo, hi) if rng.random() < 0.5 else (hi, lo)
        trill = (rng.uniform(20, 90), rng.uniform(0.0, 0.15)) if rng.random() < 0.4 else (0.0, 0.0)
        kinds.append((start, end, rng.uniform(0.015, 0.15), rng.uniform(0.5, 2.0), trill))
    out = np.zeros(n)
    t = rng.uniform(0, 0.1)
    while t < n / SR:
        kind = kinds[rng.integers(len(kinds))]
        gap = rng.uniform(0.02, 0.12)
        for _ in range(rng.integers(2, 13)):
            start, end, length, curve, (trill_rate, trill_depth) = kind
            u = np.linspace(0, 1, _n(length * rng.uniform(0.9, 1.1)))
            f = start + (end - start) * u**curve
            f *= 1 + trill_depth * np.sin(2 * np.pi * trill_rate * u * length)
            phase = 2 * np.pi * np.cumsum(f) / SR
            syllable = np.sin(np.pi * u) ** 2 * (np.sin(phase) + rng.uniform(0.05, 0.2) * np.sin(2 * phase))
            _add(out, int(t * SR), syllable, rng.uniform(0.6, 1.0))
            t += length + gap
        t += rng.uniform(0.2, 1.5)
    return out


def chirp_and_tweet(rng: np.random.Generator, n: int) -> np.ndarray:
    """Birdsong: one singer, sometimes a second, quieter one with its own song."""
    out = _song(rng, n)
    if rng.random() < 0.25:
        out += rng.uniform(0.2, 0.5) * _song(rng, n)
    return out


def applause(rng: np.random.Generator, n: int) -> np.ndarray:
    """A crowd clapping: each person a near-periodic train of resonant noise claps, swelling and fading."""
    kernels = []
    for _ in range(6):
        clap = _burst(rng, 0.03, rng.uniform(0.0015, 0.006))
        body = _resonators(np.array([rng.uniform(600, 3500)]), np.array([rng.uniform(300, 1500)]))
        kernels.append(signal.sosfilt(body, clap))
    onsets, amps, which = [], [], []
    for person in range(rng.integers(3, 60)):
        hits = _times(rng, n, rng.uniform(2.5, 6.0), rng.uniform(8, 30))
        onsets.append(hits)
        amps.append(rng.uniform(0.3, 1.0) * rng.uniform(0.7, 1.0, len(hits)))
        which.append(np.full(len(hits), person % 6))
    out = _trains(n, np.concatenate(onsets), np.concatenate(amps), kernels, np.concatenate(which))
    t = _t(n)
    attack, release = rng.uniform(0.05, 1.0), rng.uniform(0.2, 2.0)
    fade_out = np.clip((t[-1] - t) / release, 0, 1) if rng.random() < 0.5 else 1.0
    return out * np.minimum(t / attack, 1) * fade_out * (1 + rng.uniform(0.1, 0.4) * _wander(rng, n, rng.uniform(0.5, 2)))


def computer_keyboard(rng: np.random.Generator, n: int) -> np.ndarray:
    """Typing: runs of key presses with their releases; each key a plastic click over a low thock."""
    keys = []
    for _ in range(4):
        click = signal.sosfilt(_resonators(np.array([rng.uniform(1500, 7000)]), np.array([rng.uniform(400, 2000)])),
                               _burst(rng, 0.04, rng.uniform(0.001, 0.004)))
        thock = _damped(np.array([rng.uniform(250, 900)]), np.array([rng.uniform(0.03, 0.08)]), np.array([1.0]), len(click))
        keys.append(click / np.max(np.abs(click)) + rng.uniform(0.2, 0.8) * thock)
    release = rng.uniform(0.3, 0.6)
    out = np.zeros(n)
    t = rng.uniform(0, 0.1)
    while t < n / SR:
        for _ in range(rng.integers(2, 13)):
            key = keys[rng.integers(4)]
            gain = rng.uniform(0.6, 1.0)
            _add(out, int(t * SR), key, gain)
            _add(out, int((t + rng.uniform(0.04, 0.12)) * SR), key[::2], gain * release)
            t += rng.gamma(4, rng.uniform(0.09, 0.25) / 4)
        t += rng.uniform(0.3, 1.5)
    return out


def knock(rng: np.random.Generator, n: int) -> np.ndarray:
    """Knuckles on a door or table: groups of 2–5 wooden impacts (few low modes and a click)."""
    count = rng.integers(2, 5)
    kernel = _damped(rng.uniform(70, 600, count), rng.uniform(0.05, 0.35, count), rng.uniform(0.3, 1.0, count), _n(0.25))
    click = _click(rng, 0.01, rng.uniform(800, 2500), 2000, rng.uniform(0.0005, 0.002))
    _add(kernel, 0, click / np.max(np.abs(click)), rng.uniform(0.3, 1.0) * np.max(np.abs(kernel)))
    out = np.zeros(n)
    t = rng.uniform(0, 0.1)
    while t < n / SR:
        spacing = rng.uniform(0.1, 0.3)
        for _ in range(rng.integers(2, 6)):
            _add(out, int(t * SR), kernel, rng.uniform(0.6, 1.0))
            t += spacing * rng.uniform(0.9, 1.1)
        t += rng.uniform(0.6, 2.0)
    return out


Source = Callable[[np.random.Generator, int], np.ndarray]
SOURCES: dict[str, Source] = {
    "Accelerating_and_revving_and_vroom": accelerating_and_revving_and_vroom,
    "Acoustic_guitar": acoustic_guitar,
    "Applause": applause,
    "Chirp_and_tweet": chirp_and_tweet,
    "Church_bell": church_bell,
    "Computer_keyboard": computer_keyboard,
    "Drip": drip,
    "Female_speech_and_woman_speaking": female_speech_and_woman_speaking,
    "Knock": knock,
    "Male_speech_and_man_speaking": male_speech_and_man_speaking,
    "Stream": stream,
    "Walk_and_footsteps": walk_and_footsteps,
}
FIELD_CLASSES = tuple(c for c in CLASSES_80 if c in SOURCES)


# --------------------------------------------------------------------------- recording chains


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def _at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    return x + noise * (_rms(x) * 10 ** (-snr_db / 20) / max(_rms(noise), 1e-12))


def clean_chain(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Curated and test clips: a good microphone, a quiet pink or brown room tone at a random SNR."""
    n = len(x)
    room = _pink(rng, n) if rng.random() < 0.7 else _brown(rng, n)
    return _at_snr(x, room, rng.uniform(15, 45))


def _babble(rng: np.random.Generator, n: int) -> np.ndarray:
    voices = [male_speech_and_man_speaking, female_speech_and_woman_speaking]
    crowd = sum(voices[rng.integers(2)](rng, n) * rng.uniform(0.5, 1.0) for _ in range(rng.integers(2, 5)))
    return _band(crowd, None, 3000)


def _hum(rng: np.random.Generator, n: int) -> np.ndarray:
    mains = rng.choice([50.0, 60.0])
    harmonics = np.arange(1, 9)
    return _damped(mains * harmonics, np.full(8, 1e6), rng.uniform(0, 1, 8) / harmonics, n, rng.uniform(0, 6.3, 8))


def _wind(rng: np.random.Generator, n: int) -> np.ndarray:
    return _band(_brown(rng, n), None, rng.uniform(200, 500)) * (1.2 + _wander(rng, n, rng.uniform(0.3, 2)))


def field_chain(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Noisy clips, another domain: a room's reverb, hum/babble/wind, a cheap band-limited mic, AGC and clipping."""
    n = len(x)
    rt60 = rng.uniform(0.3, 1.5)
    tail = _t(_n(rt60))
    response = rng.standard_normal(len(tail)) * np.exp(-6.9 * tail / rt60)
    response = _band(response, None, rng.uniform(2000, 8000))
    response *= rng.uniform(0.3, 1.0) / np.sqrt(np.sum(response**2))
    response[0] += 1.0
    x = signal.oaconvolve(x, response)[:n]
    backgrounds = [_hum, _babble, _wind]
    for k in rng.choice(3, rng.integers(1, 3), replace=False):
        x = _at_snr(x, backgrounds[k](rng, n), rng.uniform(3, 20))
    x = _band(x, rng.uniform(100, 400), rng.uniform(3000, 8000), order=4)
    power = signal.lfilter([0.002], [1, -0.998], x * x)
    threshold = rng.uniform(0.5, 1.5) * np.mean(power)
    ratio = rng.uniform(2, 8)
    x = x * np.minimum(1.0, (np.maximum(power, 1e-20) / threshold) ** ((1 / ratio - 1) / 2))
    peak = max(np.max(np.abs(x)), 1e-12)
    drive = rng.uniform(1, 4)
    x = np.tanh(drive * x / peak) / np.tanh(drive)
    if rng.random() < 0.3:
        level = rng.uniform(0.5, 0.9)
        x = np.clip(x, -level, level)
    return x


# --------------------------------------------------------------------------- plan and render


@dataclass(frozen=True)
class Clip:
    """One planned clip: what it sounds like (true labels) and what its CSV says (labels)."""

    part: str
    index: int
    fname: str
    seconds: float
    true_labels: tuple[str, ...]
    labels: tuple[str, ...]
    silent: bool = False
    usage: str = ""
    freesound_id: int = 0
    license: str = ""


def _durations(rng: np.random.Generator, part: str, count: int) -> np.ndarray:
    lo, hi = DURATIONS[part]
    if part == "noisy":
        seconds = rng.uniform(lo, hi, count)
    else:
        seconds = np.exp(rng.uniform(np.log(lo), np.log(hi), count))
        forced = rng.choice(count, max(1, round(SHORT_SHARE * count)), replace=False) if count else []
        seconds[forced] = rng.uniform(0.3, 0.5, len(forced))
    return np.round(seconds, 3)


def _label_sets(rng: np.random.Generator, count: int, balanced: bool) -> list[tuple[str, ...]]:
    """Label sets: the first label cycles through the classes (balanced) or is drawn at random; extras are random."""
    classes = list(FIELD_CLASSES)
    order = [classes[i] for i in rng.permutation(len(classes))]
    sets = []
    for i in range(count):
        first = order[i % len(order)] if balanced else classes[rng.integers(len(classes))]
        extra = 0
        if rng.random() < MULTI_LABEL_SHARE:
            extra = 2 if rng.random() < THREE_LABEL_SHARE else 1
        others = [c for c in classes if c != first]
        sets.append((first, *(others[j] for j in rng.choice(len(others), extra, replace=False))))
    return sets


def _corrupt(rng: np.random.Generator, labels: tuple[str, ...]) -> tuple[str, ...]:
    """A wrong label set: one label replaced by an absent class, or an absent class added."""
    absent = [c for c in FIELD_CLASSES if c not in labels]
    wrong = absent[rng.integers(len(absent))]
    if rng.random() < 0.6:
        out = list(labels)
        out[rng.integers(len(out))] = wrong
        return tuple(out)
    return (*labels, wrong)


def plan(seed: int, scale: float) -> list[Clip]:
    """Every clip of the dataset with its labels, durations and test metadata, a pure function of the seed."""
    rng = np.random.default_rng([seed, 0])
    counts = {part: max(1, round(count * scale)) for part, count in COUNTS.items()}
    total = sum(counts.values())
    fnames = [f"{v:08x}.wav" for v in rng.choice(2**32, total, replace=False)]
    clips, at = [], 0
    for part, count in counts.items():
        seconds = _durations(rng, part, count)
        sets = _label_sets(rng, count, balanced=part != "noisy")
        wrong = rng.random(count) < WRONG_LABEL_SHARE if part == "noisy" else np.zeros(count, bool)
        silent = int(rng.integers(count)) if part == "curated" else -1
        public = rng.random(count) < PUBLIC_SHARE
        for i in range(count):
            extra = {}
            if part == "test":
                extra = {"usage": "Public" if public[i] else "Private", "freesound_id": int(rng.integers(10_000, 500_000)),
                         "license": LICENSES[rng.integers(len(LICENSES))]}
            labels = _corrupt(rng, sets[i]) if wrong[i] else sets[i]
            clips.append(Clip(part, i, fnames[at + i], float(seconds[i]), sets[i], labels, i == silent, **extra))
        at += count
    return clips


def render(clip: Clip, seed: int) -> np.ndarray:
    """The int16 waveform of a clip: its true sources mixed at random levels and offsets, then its part's chain."""
    n = _n(clip.seconds)
    if clip.silent:
        return np.zeros(n, np.int16)
    rng = np.random.default_rng([seed, PART_CODES[clip.part], clip.index])
    mix = np.zeros(n)
    for k, name in enumerate(clip.true_labels):
        length = n if k == 0 else max(min(n, _n(0.3)), int(n * rng.uniform(0.35, 1.0)))
        onset = int(rng.integers(0, n - length + 1))
        sound = SOURCES[name](rng, length)
        gain = 1.0 if k == 0 else 10 ** (rng.uniform(-12, 0) / 20)
        _add(mix, onset, sound, gain / max(np.max(np.abs(sound)), 1e-12))
    mix = field_chain(rng, mix) if clip.part == "noisy" else clean_chain(rng, mix)
    peak_db = rng.uniform(-12, -0.5) if clip.part == "noisy" else rng.uniform(-24, -1)
    mix *= 10 ** (peak_db / 20) / max(np.max(np.abs(mix)), 1e-12)
    return np.clip(np.round(mix * 32767), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- writing


def write_dataset(out: Path, seed: int = 0, scale: float = 1.0) -> list[Clip]:
    """Render and write the whole root, which replaces OUT only when complete; noisy_true_labels.csv adds the
    noisy clips' true labels to the FSDKaggle2019 files."""
    clips = plan(seed, scale)
    by_part = {part: [c for c in clips if c.part == part] for part in FOLDERS}
    with new_root(out) as tmp:
        for clip in clips:
            write_wav(tmp / FOLDERS[clip.part] / clip.fname, render(clip, seed))
        rows = {part: [Row(c.fname, c.labels, c.usage, c.freesound_id, c.license) for c in mine]
                for part, mine in by_part.items()}
        write_csvs(tmp, CLASSES_80, rows["curated"], rows["noisy"], rows["test"])
        write_csv(tmp / "noisy_true_labels.csv", ["fname", "labels", "true_labels"],
                  [[c.fname, ",".join(c.labels), ",".join(c.true_labels)] for c in by_part["noisy"]])
    return clips


def summary(clips: list[Clip]) -> str:
    """Clips and seconds per class (CSV labels) and part, plus the multi-label and wrong-label shares."""
    head = f"{'class':<36}" + "".join(f"{part:>18}" for part in FOLDERS)
    lines = [head, f"{'':<36}" + "".join(f"{'clips':>10}{'s':>8}" for _ in FOLDERS)]
    for name in (*FIELD_CLASSES, "all"):
        cells = ""
        for part in FOLDERS:
            sel = [c for c in clips if c.part == part and (name == "all" or name in c.labels)]
            cells += f"{len(sel):>10}{sum(c.seconds for c in sel):>8.0f}"
        lines.append(f"{name:<36}{cells}")
    for part in FOLDERS:
        sel = [c for c in clips if c.part == part]
        multi = np.mean([len(c.labels) > 1 for c in sel])
        wrong = np.mean([c.labels != c.true_labels for c in sel])
        short = sum(c.seconds < 0.5 for c in sel)
        lines.append(f"{part}: multi-label {multi:.0%}, wrong labels {wrong:.0%}, under 0.5 s {short}, "
                     f"silent {sum(c.silent for c in sel)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="dataset root to write (replaced when complete)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every part's clip count")
    args = parser.parse_args(argv)
    if args.seed < 0 or args.scale <= 0:
        parser.error("--seed must be >= 0 and --scale > 0")
    print(summary(write_dataset(args.out, args.seed, args.scale)))


if __name__ == "__main__":
    main()
