"""Power log-mel spectrograms, equal to librosa's but batched and fast, and the streaming feature-store builder.

Frames are transformed unwindowed (float64 FFT, read in place from the padded signal); the periodic Hann
window is applied in the frequency domain (three-bin stencil), fused with |.|^2 and the sparse mel filterbank
in one compiled kernel. float64 keeps bands 80 dB under a loud frame within 1e-3 dB of librosa (a float32 FFT
does not: benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import torch

from fsdlib.audio import SAMPLE_RATE, load_wav
from fsdlib.errors import FsdError
from fsdlib.logmel import mel_basis
from fsdlib.prefetch import prefetch
from fsdlib.progress import progress_bar
from fsdlib.settings import FeatureSettings, LogMelConfig
from fsdlib.store import StoreWriter
from fsdlib.wave_ref import WaveRef, wave_ref

_INT16_POWER_SCALE = 2.0**-30  # (1 / 32768) ** 2: int16 samples are transformed unscaled, exactly


@numba.njit(nogil=True, cache=True)
def _windowed_mel(spec, starts, stops, offsets, weights, scale, out):  # pragma: no cover - compiled
    """Hann-windowed power of each rfft row, 0.5 X[k] - 0.25 (X[k-1] + X[k+1]), through the sparse filterbank.

    spec: (frames, 2 * bins) float64, the complex rfft viewed as interleaved re/im; out: (frames, n_mels).
    Four frames share each pass over a band's weights (four independent sums instead of one long chain).
    """
    n_frames = spec.shape[0]
    n_bins = spec.shape[1] // 2
    n_mels = starts.shape[0]
    power = np.zeros((4, n_bins))
    sums = np.zeros((4, n_mels))
    for f0 in range(0, n_frames, 4):
        nf = min(4, n_frames - f0)
        for j in range(nf):
            a = spec[f0 + j]
            p = power[j]
            for k in range(1, n_bins - 1):  # constant bounds: computed bounds stop LLVM from vectorising
                re = 0.5 * a[2 * k] - 0.25 * (a[2 * k - 2] + a[2 * k + 2])
                im = 0.5 * a[2 * k + 1] - 0.25 * (a[2 * k - 1] + a[2 * k + 3])
                p[k] = re * re + im * im
            re = 0.5 * a[0] - 0.5 * a[2]  # DC: both neighbours are X[1]; X[0] is real
            p[0] = re * re
            re = 0.5 * a[2 * n_bins - 2] - 0.5 * a[2 * n_bins - 4]  # Nyquist: X[n/2-1]
            p[n_bins - 1] = re * re
        p0, p1, p2, p3 = power[0], power[1], power[2], power[3]
        for m in range(n_mels):
            s0 = s1 = s2 = s3 = 0.0
            base = offsets[m] - starts[m]
            for k in range(starts[m], stops[m]):
                w = weights[base + k]
                s0 += w * p0[k]
                s1 += w * p1[k]
                s2 += w * p2[k]
                s3 += w * p3[k]
            sums[0, m], sums[1, m], sums[2, m], sums[3, m] = s0, s1, s2, s3
        for j in range(nf):
            row = sums[j]
            o = out[f0 + j]
            for m in range(n_mels):
                o[m] = row[m] * scale


class LogMelExtractor:
    """Power mel spectrograms of many clips at once, equal to librosa.feature.melspectrogram (float64) transposed.

    Clips are cut in chunks of `chunk_frames` frames (enough to amortise MKL's setup per FFT call, few enough
    for the spectrum to stay in L2) shared by `threads` workers (default: torch's thread count), each running
    MKL and the kernel single-threaded. Waves are 1-D: int16, or float already scaled to [-1, 1).
    """

    def __init__(self, cfg: LogMelConfig, chunk_frames: int = 128, threads: int | None = None) -> None:
        self.cfg = cfg
        self.chunk_frames = chunk_frames
        self.threads = threads or torch.get_num_threads()
        if cfg.n_fft % 2:
            raise ValueError("n_fft must be even (periodic Hann in the frequency domain)")
        basis = mel_basis(cfg)
        starts, stops = np.zeros(cfg.n_mels, np.int64), np.zeros(cfg.n_mels, np.int64)
        for m, row in enumerate(basis):
            nonzero = np.flatnonzero(row)
            if nonzero.size:  # an empty band (too many mels for the FFT size) stays all zero, as in librosa
                starts[m], stops[m] = nonzero[0], nonzero[-1] + 1
        self._starts, self._stops = starts, stops
        self._offsets = np.concatenate([[0], np.cumsum(stops - starts)[:-1]]).astype(np.int64)
        self._weights = np.concatenate([basis[m, starts[m]:stops[m]] for m in range(cfg.n_mels)])

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT: one per hop, plus one."""
        return self.cfg.n_frames(n_samples)

    def __call__(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Power mel spectrogram (frames, n_mels) float32 of each wave (int16, or float already in [-1, 1))."""
        outs = [np.empty((self.n_frames(len(w)), self.cfg.n_mels), np.float32) for w in waves]
        tasks = [(i, f0, min(f0 + self.chunk_frames, len(out)))
                 for i, out in enumerate(outs) for f0 in range(0, len(out), self.chunk_frames)]
        self._parallel(lambda task: self._chunk(waves, outs, *task), tasks)
        return outs

    def _parallel(self, work: Callable, tasks: list) -> None:
        """Run work(task) for every task on up to `threads` workers, each with single-threaded torch."""
        saved = torch.get_num_threads()
        feed = iter(tasks)
        lock = threading.Lock()

        def worker() -> None:
            torch.set_num_threads(1)
            while True:
                with lock:
                    task = next(feed, None)
                if task is None:
                    return
                work(task)

        try:
            threads = min(self.threads, len(tasks))
            if threads == 1:
                worker()
            elif threads > 1:
                with ThreadPoolExecutor(threads) as pool:
                    for job in [pool.submit(worker) for _ in range(threads)]:
                        job.result()
        finally:
            torch.set_num_threads(saved)  # workers set 1 for their thread, and torch keeps that as the default too

    def _chunk(self, waves: Sequence[np.ndarray], outs: list[np.ndarray], i: int, f0: int, f1: int) -> None:
        """Frames f0:f1 of wave i: padded samples assembled in float64, FFT, mel kernel."""
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        wave = waves[i]
        n = (f1 - f0 - 1) * hop + n_fft
        start = f0 * hop - n_fft // 2  # first sample of the chunk in the unpadded wave
        lo, hi = max(start, 0), min(start + n, len(wave))
        chunk = np.empty(n, np.float64)
        chunk[: lo - start] = 0.0
        chunk[lo - start : hi - start] = wave[lo:hi]
        chunk[max(hi - start, 0) :] = 0.0
        spec = torch.fft.rfft(torch.from_numpy(chunk).unfold(0, n_fft, hop), dim=1)  # MKL reads the strided view
        scale = _INT16_POWER_SCALE if wave.dtype == np.int16 else 1.0
        _windowed_mel(spec.numpy().view(np.float64), self._starts, self._stops, self._offsets, self._weights, scale,
                      outs[i][f0:f1])


Read = tuple[list[str], list[np.ndarray], list[WaveRef | None]]


def _read_batches(items: Sequence[tuple[str, Path]], batch_samples: int, refer: bool) -> Iterator[Read]:
    """Clips in input order, in batches closed as soon as they hold `batch_samples` samples; with `refer`, each
    clip's reference when its WAV can be read in place (None when it needed converting)."""
    fnames: list[str] = []
    waves: list[np.ndarray] = []
    refs: list[WaveRef | None] = []
    size = 0
    for fname, path in items:
        wave = load_wav(path)
        fnames.append(fname)
        waves.append(wave)
        refs.append(wave_ref(path, len(wave)) if refer else None)
        size += len(wave)
        if size >= batch_samples:
            yield fnames, waves, refs
            fnames, waves, refs, size = [], [], [], 0
    if fnames:
        yield fnames, waves, refs


def build_feature_store(items: Sequence[tuple[str, Path]], out_prefix: Path, settings: FeatureSettings,
                        progress: bool = True) -> None:
    """Write `{out_prefix}.logmel.arrow` (power mel) and `{out_prefix}.wave.arrow` (int16) for `items`, in order.

    Streams in batches of about `batch_seconds` of audio: up to two batches are read ahead and the previous one
    written in background threads while the current one is transformed, so memory stays bounded whatever the size.
    `settings.wave_store` "copy" copies every clip's samples into the waveform store; "reference" records where the samples
    of each 16-bit mono 44.1 kHz WAV lie (read in place later) and copies only the clips that needed converting.
    """
    out_prefix, cfg, wave_store = Path(out_prefix), settings.logmel, settings.wave_store
    if cfg.sample_rate != SAMPLE_RATE:
        raise FsdError(f"log-mel sample_rate is {cfg.sample_rate} Hz but clips are read at {SAMPLE_RATE} Hz")
    repeated = [name for name, count in Counter(fname for fname, _ in items).items() if count > 1]
    if repeated:
        raise FsdError(f"clip {repeated[0]} is listed more than once")
    extractor = LogMelExtractor(cfg)
    meta = {"config": dataclasses.asdict(cfg), "sample_rate": cfg.sample_rate}
    logmel_path = out_prefix.parent / f"{out_prefix.name}.logmel.arrow"
    wave_path = out_prefix.parent / f"{out_prefix.name}.wave.arrow"
    batch_samples = max(1, int(settings.batch_seconds * SAMPLE_RATE))
    with (StoreWriter(logmel_path, "logmel", np.float32, cfg.n_mels, meta) as logmel_store,
          StoreWriter(wave_path, "wave", np.int16, 1, meta, layout=wave_store) as waves_out,
          progress_bar(f"features {out_prefix.name}", len(items), enabled=progress) as advance,
          ThreadPoolExecutor(1, thread_name_prefix="fsdlib-write") as writer):

        def write(fnames: list[str], waves: list[np.ndarray], refs: list[WaveRef | None], mels: list[np.ndarray]) -> None:
            logmel_store.write(fnames, mels)
            waves_out.write(fnames, waves, refs if wave_store == "reference" else None)
            advance(len(fnames))

        pending = None
        read = _read_batches(items, batch_samples, wave_store == "reference")
        for fnames, waves, refs in prefetch(read, depth=2, name="fsdlib-read"):
            mels = extractor(waves)
            if pending is not None:
                pending.result()  # one batch in writing, one computed, two read ahead: bounded memory
            pending = writer.submit(write, fnames, waves, refs, mels)
        if pending is not None:
            pending.result()
