"""Log-mel settings, the mel filter bank and a numpy mel spectrogram: no torch, numba or librosa on import.

The feature stores are computed by the fused, threaded kernel of fsdlib/features.py; tagging computes the same
power mel spectrogram here with numpy (the periodic Hann window applied to each frame, then the power spectrum
through the filter bank), so a tagging process imports neither torch's FFT nor numba nor librosa (docs/method.md
§2). tests/test_features.py holds the kernel to librosa's `melspectrogram`, tests/test_onnx_tagger.py this one to the
kernel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fsdlib.errors import FsdError
from fsdlib.settings import LogMelConfig

INT16_SCALE = 1.0 / 32768.0


def mel_basis(cfg: LogMelConfig) -> np.ndarray:
    """librosa's Slaney-normalised mel filter bank (n_mels, 1 + n_fft / 2), float64."""
    import librosa  # late: 0.7 s of imports (scipy.signal) that tagging with a stored bank skips

    return librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax,
                               htk=False, norm="slaney", dtype=np.float64)


def filter_bands(basis: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """Each filter's non-zero band of a filter bank (n_mels, bins): its first bin, last bin + 1 and weights."""
    bands = []
    for row in np.asarray(basis, np.float64):
        nonzero = np.flatnonzero(row)
        start, stop = (int(nonzero[0]), int(nonzero[-1]) + 1) if len(nonzero) else (0, 0)
        bands.append((start, stop, np.ascontiguousarray(row[start:stop])))
    return bands


class MelSpectrogram:
    """Power mel spectrograms (frames, n_mels) float32 of 1-D waves (int16, or float in [-1, 1)), one clip at a
    time in chunks of `chunk_frames` frames: memory bounded by the chunk, whatever the clip's length.

    Each filter is a product with its own band of non-zero bins (about 2 per bin in all, against n_mels per bin for
    the dense bank): no multi-threaded matrix product, so several clips run at once on their own threads (`many`).
    """

    def __init__(self, cfg: LogMelConfig, basis: np.ndarray | None = None, chunk_frames: int = 256) -> None:
        if cfg.n_fft % 2:
            raise FsdError("n_fft must be even")
        basis = mel_basis(cfg) if basis is None else np.asarray(basis, np.float64)
        if basis.shape != (cfg.n_mels, cfg.n_fft // 2 + 1):
            raise FsdError(f"mel filter bank of shape {basis.shape}, expected {(cfg.n_mels, cfg.n_fft // 2 + 1)}")
        self.cfg, self.basis, self.chunk_frames = cfg, basis, chunk_frames
        self._bands = filter_bands(basis)
        n = np.arange(cfg.n_fft)
        self._window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.n_fft)  # periodic Hann, as librosa's STFT

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        x = wave.astype(np.float64) * (INT16_SCALE if wave.dtype == np.int16 else 1.0)
        half = cfg.n_fft // 2
        padded = np.concatenate([np.zeros(half), x, np.zeros(half)])
        frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[:: cfg.hop_length]
        out = np.zeros((len(frames), cfg.n_mels), np.float32)
        for f0 in range(0, len(frames), self.chunk_frames):
            spec = np.fft.rfft(frames[f0 : f0 + self.chunk_frames] * self._window, axis=1)
            power = spec.real**2 + spec.imag**2
            rows = out[f0 : f0 + len(spec)]
            for j, (start, stop, weights) in enumerate(self._bands):
                rows[:, j] = power[:, start:stop] @ weights
        return out

    def many(self, waves: Sequence[np.ndarray], threads: int | None = None) -> list[np.ndarray]:
        """The spectrograms of several waves, on `threads` threads (default: one per core; numpy's FFT and the
        band products release the GIL)."""
        threads = min(threads or os.cpu_count() or 1, len(waves))
        if threads <= 1:
            return [self(w) for w in waves]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(self, waves))
