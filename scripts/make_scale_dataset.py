"""Write an FSDKaggle2019-sized dataset at a fraction of full size: the real counts and durations, cheap audio.

For measuring how the pipeline scales (benchmarks/bench_scale.py), not for learning: the counts of
docs/method.md §1 (4,970 curated, 19,815 noisy, 4,481 test clips, 80 classes) times `--fraction`, durations
drawn per part so that the hours match the real data's (curated 10.5 h in 0.3-30 s, noisy 80 h in 1-16 s, test
like curated), each clip a slice of its classes' tone-plus-noise loop, written as 16-bit mono 44.1 kHz WAV.

    python scripts/make_scale_dataset.py OUT_DIR [--fraction 0.0625] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsdlib.layout import FOLDERS, LICENSES, Row, new_root, write_csvs, write_wav
from fsdlib.vocabulary import CLASSES_80

SR = 44_100
CODES = {"curated": 1, "noisy": 2, "test": 3}  # first hex digit of a part's file names
FULL_COUNTS = {"curated": 4_970, "noisy": 19_815, "test": 4_481}
FULL_HOURS = {"curated": 10.5, "noisy": 80.0, "test": 4_481 * 10.5 / 4_970}  # test: curated's mean duration
RANGES = {"curated": (0.3, 30.0), "noisy": (1.0, 16.0), "test": (0.3, 30.0)}
SPREADS = {"curated": 1.0, "noisy": 0.5, "test": 1.0}  # sigma of the log-normal before clipping
TWO_LABEL_SHARE = 0.15
PUBLIC_SHARE = 1_120 / 4_481
LOOP = 1 << 20  # samples of each class's audio loop (23.8 s)


@dataclass(frozen=True)
class Clip:
    """One planned clip: its part, file name, length in samples and class indices."""

    part: str
    fname: str
    n_samples: int
    labels: tuple[int, ...]
    usage: str = ""


def clipped_lognormal(n: int, low: float, high: float, mean: float, sigma: float,
                      rng: np.random.Generator) -> np.ndarray:
    """n durations exp(mu + sigma z) clipped to [low, high], mu chosen (bisection) so that their mean is `mean`."""
    if not low <= mean <= high:
        raise ValueError(f"mean {mean} outside [{low}, {high}]")
    z = rng.standard_normal(n)
    lo, hi = np.log(low) - 6 * sigma, np.log(high) + 6 * sigma
    for _ in range(80):  # the clipped mean grows monotonically with mu
        mu = 0.5 * (lo + hi)
        if np.clip(np.exp(mu + sigma * z), low, high).mean() < mean:
            lo = mu
        else:
            hi = mu
    return np.clip(np.exp(0.5 * (lo + hi) + sigma * z), low, high)


def part_labels(n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """A first label cycling through the 80 classes (every class present once n >= 80), a second on some clips."""
    first = rng.permutation(np.arange(n) % len(CLASSES_80))
    out = []
    for c in first:
        if rng.random() < TWO_LABEL_SHARE:
            other = int(rng.integers(len(CLASSES_80) - 1))
            out.append((int(c), other + (other >= c)))
        else:
            out.append((int(c),))
    return out


def plan(fraction: float, seed: int) -> list[Clip]:
    """Every clip of the dataset at `fraction` of full size: counts and hours scaled, durations per part."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    clips = []
    for part, full in FULL_COUNTS.items():
        n = max(5, round(full * fraction))
        mean = FULL_HOURS[part] * 3600 / full
        seconds = clipped_lognormal(n, *RANGES[part], mean, SPREADS[part], rng)
        labels = part_labels(n, rng)
        public = rng.random(n) < PUBLIC_SHARE
        for i in range(n):
            usage = ("Public" if public[i] else "Private") if part == "test" else ""
            clips.append(Clip(part, f"{CODES[part]:x}{i:07x}.wav", max(1, round(seconds[i] * SR)), labels[i], usage))
    return clips


def class_loops(seed: int) -> np.ndarray:
    """(80, LOOP) int16: per class a tone on its own semitone (100 Hz up) with white noise 20 dB under it."""
    rng = np.random.default_rng([seed, 1])
    t = np.arange(LOOP, dtype=np.float32) / SR
    loops = np.empty((len(CLASSES_80), LOOP), np.int16)
    for c in range(len(CLASSES_80)):
        tone = np.sin(np.float32(2 * np.pi * 100.0 * 2 ** (c / 12)) * t)
        noise = rng.standard_normal(LOOP, dtype=np.float32)
        loops[c] = np.round(6_000 * tone + 600 * noise).astype(np.int16)
    return loops


def clip_samples(clip: Clip, loops: np.ndarray) -> np.ndarray:
    """The clip's int16 samples: its classes' loops from an offset given by its name, mixed at half gain each."""
    offset = int(clip.fname[1:8], 16) * 7_919 % LOOP
    idx = (offset + np.arange(clip.n_samples)) % LOOP if offset + clip.n_samples > LOOP else None
    parts = [loops[c][idx] if idx is not None else loops[c][offset : offset + clip.n_samples] for c in clip.labels]
    if len(parts) == 1:
        return parts[0]
    return ((parts[0].astype(np.int32) + parts[1]) // 2).astype(np.int16)


def rows(clips: list[Clip], part: str) -> list[Row]:
    """A part's CSV rows in plan order; a test clip's Freesound id is its index, its licence CC0."""
    mine = [c for c in clips if c.part == part]
    return [Row(c.fname, tuple(CLASSES_80[k] for k in c.labels), c.usage, i, LICENSES[0]) for i, c in enumerate(mine)]


def generate(root: Path, fraction: float, seed: int = 0, threads: int = 2) -> list[Clip]:
    """Write the whole root (replaced only when complete); returns the plan."""
    clips = plan(fraction, seed)
    loops = class_loops(seed)
    with new_root(root) as tmp:
        def write(clip: Clip) -> None:
            write_wav(tmp / FOLDERS[clip.part] / clip.fname, clip_samples(clip, loops))

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, clips))
        write_csvs(tmp, CLASSES_80, *(rows(clips, part) for part in ("curated", "noisy", "test")))
    return clips


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="dataset root to write (replaced if present)")
    parser.add_argument("--fraction", type=float, default=1 / 16, help="share of FSDKaggle2019's size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    clips = generate(args.out, args.fraction, args.seed, args.threads)
    for part in FOLDERS:
        mine = [c for c in clips if c.part == part]
        hours = sum(c.n_samples for c in mine) / SR / 3600
        print(f"{part}: {len(mine)} clips, {hours:.2f} h, mean {hours * 3600 / len(mine):.2f} s")
    total = sum(c.n_samples for c in clips)
    print(f"{len(clips)} clips, {total / SR / 3600:.2f} h, {2 * total / 1e9:.2f} GB of samples, "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
