"""Log-mel throughput: per-file librosa against fsdlib's batched extractor, same clips, same run.

    python benchmarks/bench_features.py [--clips N] [--seconds S] [--wav-dir DIR]

Generates WAV clips of FSDKaggle2019-like lengths (0.5-30 s, mean about S) in a temporary folder, or reads
DIR, then reports audio seconds per wall second, end to end including reading the files:
  librosa f64   soundfile.read (float64, its default) + librosa.feature.melspectrogram, file by file
  librosa f32   the same with float32 samples (what librosa.load gives)
  ours          load_wav + LogMelExtractor (float64 FFT), in batches of 60 s of audio
  ours + store  build_feature_store: the same, writing both Arrow stores
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsdlib.audio import SAMPLE_RATE, load_wav  # noqa: E402
from fsdlib.features import LogMelExtractor, build_feature_store  # noqa: E402
from fsdlib.settings import LogMelConfig  # noqa: E402


def write_clips(folder: Path, n_clips: int, mean_seconds: float, seed: int = 0) -> list[Path]:
    """Noise bursts and tones with exponential lengths clipped to 0.5-30 s, as 16-bit WAVs."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_clips):
        seconds = float(np.clip(rng.exponential(mean_seconds), 0.5, 30.0))
        n = int(seconds * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        wave = rng.standard_normal(n) * rng.uniform(0.01, 0.3) * np.exp(-t * rng.uniform(0, 2))
        wave += 0.2 * np.sin(2 * np.pi * rng.uniform(50, 8000) * t)
        path = folder / f"{i:05d}.wav"
        sf.write(path, np.clip(wave, -1, 1), SAMPLE_RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def librosa_per_file(paths: list[Path], cfg: LogMelConfig, dtype: str) -> None:
    """The baseline: read each file and call librosa on it."""
    for path in paths:
        y, sr = sf.read(path, dtype=dtype)
        librosa.feature.melspectrogram(y=y, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, fmin=cfg.fmin,
                                       fmax=cfg.fmax, n_mels=cfg.n_mels)


def ours_extract(paths: list[Path], cfg: LogMelConfig, batch_seconds: float = 60.0) -> None:
    """load_wav and the batched extractor, without writing."""
    extractor = LogMelExtractor(cfg)
    batch: list[np.ndarray] = []
    for path in paths:
        batch.append(load_wav(path))
        if sum(map(len, batch)) >= batch_seconds * SAMPLE_RATE:
            extractor(batch)
            batch = []
    if batch:
        extractor(batch)


def measure(runs: dict[str, object], repeats: int) -> dict[str, tuple[float, float]]:
    """Best wall and CPU seconds of each run; methods alternate, so a burst of outside load hits all of them."""
    best = {name: (float("inf"), float("inf")) for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            cpu, wall = time.process_time(), time.perf_counter()
            run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=150, help="clips to generate")
    parser.add_argument("--seconds", type=float, default=7.0, help="mean clip length in seconds")
    parser.add_argument("--wav-dir", type=Path, help="use the WAVs of this folder instead of generating")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the best counts")
    args = parser.parse_args()
    cfg = LogMelConfig()
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        folder = Path(tmp)
        paths = sorted(args.wav_dir.glob("*.wav")) if args.wav_dir else write_clips(folder, args.clips,
                                                                                     args.seconds)
        seconds = sum(sf.info(p).duration for p in paths)
        for p in paths:  # both sides read from the page cache
            p.read_bytes()
        print(f"{len(paths)} clips, {seconds:.0f} s of audio (mean {seconds / len(paths):.1f} s); "
              f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
        librosa_per_file(paths[:2], cfg, "float32")  # warm-ups: imports, caches, JIT
        ours_extract(paths[:2], cfg)
        items = [(p.name, p) for p in paths]
        times = measure({
            "librosa f64": lambda: librosa_per_file(paths, cfg, "float64"),
            "librosa f32": lambda: librosa_per_file(paths, cfg, "float32"),
            "ours": lambda: ours_extract(paths, cfg),
            "ours + store": lambda: build_feature_store(items, folder / "out" / "bench", cfg, progress=False),
        }, args.repeats)
        rates = {name: seconds / wall for name, (wall, _) in times.items()}
        for name, (_, cpu) in times.items():
            print(f"{name:>13}: {rates[name]:6.0f} audio-s per wall-s  ({seconds / cpu:5.0f} per CPU-s)")
        for ours in ("ours", "ours + store"):
            print(f"{ours:>13}: {rates[ours] / rates['librosa f64']:5.1f}x librosa f64, "
                  f"{rates[ours] / rates['librosa f32']:5.1f}x librosa f32")
        print(f"load average after: {os.getloadavg()[0]:.2f} (other processes on the 2 cores skew all numbers)")

if __name__ == "__main__":
    main()
