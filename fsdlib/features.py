"""Power log-mel spectrograms, equal to librosa's but batched and fast, and the streaming feature-store builder.

Frames are transformed unwindowed (float64 FFT, read in place from the padded signal); the periodic Hann
window is applied in the frequency domain (three-bin stencil), fused with |.|^2 and the sparse mel filterbank
in one compiled kernel. float64 keeps bands 80 dB under a loud frame within 1e-3 dB of librosa.

Opt-in (float32=True): a float32 FFT of every frame, with a per-band bound on its roundoff (see
_FFT32_NOISE), and a float64 "repair" of just the frames where a band within 80 dB of the clip's maximum
could be off by more than 1e-4. It is exact to the same tolerance but not the default: float32 roundoff lies
~145 dB under a frame's energy, so any band more than ~64 dB under its own frame (tonal sounds, roll-offs)
must be repaired; on the benchmark's tone + noise clips 84% of frames were, making it ~10% slower than
float64 alone, and on white noise (0.5% repaired) it was only ~1.2-1.35x faster, since the kernel, not the
FFT, is then the larger cost.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import torch

from fsdlib.audio import SAMPLE_RATE, load_wav
from fsdlib.errors import FsdError
from fsdlib.progress import progress_bar
from fsdlib.store import StoreWriter

_INT16_POWER_SCALE = 2.0**-30  # (1 / 32768) ** 2: int16 samples are transformed unscaled, exactly

# The float32 error bound. Let E'_k be the error of the Hann-windowed float32 bin k (FFT roundoff, then the
# stencil in float64) and U = sum_k |X_k|^2 the frame's unwindowed energy over the rfft bins. Measured over
# adversarial frames (full-scale pure tones on and off bin centres, 25 Hz and 15 kHz tones, chirp, square
# wave, DC + 2 LSB noise, clicks, tone + 0.5 LSB noise, white noise), max_k |E'_k|^2 / U <= 3.9e-15 (about
# (2 * 2^-24)^2: the loudest bin's own rounding; bins away from it are ~100x lower). _FFT32_NOISE takes 4x that
# (2x in amplitude). A band P = sum_k w_k |X'_k|^2 with weight sum W then has error Q = sum_k w_k |E'_k|^2
# <= G U, G = _FFT32_NOISE * W, and by Cauchy-Schwarz |P32 - P| <= 2 sqrt(P Q) + Q. The band is exact to the
# relative error _REL_TARGET = 1e-4 (4.3e-4 dB, under half the 1e-3 dB budget) unless P32 < G U / ((r/2)^2):
# such a "fragile" band's true value is only known to lie below (sqrt(P32) + sqrt(G U))^2, and when that bound
# reaches the clip's 80 dB floor (from a lower bound of the clip's maximum) the frame is redone in float64.
_FFT32_NOISE = 1.6e-14
_REL_TARGET = 1e-4
_TOP_DB_FACTOR = 1e-8  # 80 dB: the cells that must match librosa
_AMIN = 1e-10  # below this power dB conversions clamp, so smaller cells count only down to it
_SWITCH_FRACTION = 0.25  # a float32 chunk with more frames to repair than this goes float64 (speed only)


def _needs_float64(hi: np.ndarray, clip_max_lower: float) -> np.ndarray:
    """Frames whose fragile bands may reach the smallest power that must be exact: 80 dB under the clip's
    maximum (or amin, where dB conversions clamp), halved for safety."""
    floor = 0.5 * min(_TOP_DB_FACTOR * clip_max_lower, _AMIN)
    return (hi >= floor) & (hi > 0.0)


@dataclass(frozen=True)
class LogMelConfig:
    """Log-mel settings (SPEC section 2): librosa's melspectrogram with these arguments, centred, zero-padded."""

    sample_rate: int = 44100
    n_mels: int = 128
    n_fft: int = 2560
    hop_length: int = 347
    fmin: float = 20.0
    fmax: float = 22050.0


@numba.njit(nogil=True, cache=True, fastmath=True)
def _sum_squares(a):  # pragma: no cover - compiled
    """sum(a**2) in float64 (fastmath: a vectorised reduction; only used for error bounds)."""
    s = 0.0
    for i in range(a.shape[0]):
        v = np.float64(a[i])
        s += v * v
    return s


@numba.njit(nogil=True, cache=True)
def _windowed_mel(spec, starts, stops, offsets, weights, scale, out, fragile, noise, hi, lo):  # pragma: no cover
    """Hann-windowed power of each rfft row, 0.5 X[k] - 0.25 (X[k-1] + X[k+1]), through the sparse filterbank.

    spec: (frames, 2 * bins) float32 or float64, the complex rfft viewed as interleaved re/im, converted to
    float64 before any arithmetic; out: (frames, n_mels). Four frames share each pass over a band's weights
    (four independent sums instead of one long chain). When `hi` is not empty (float32
    spectra) the float32 error bound is evaluated per band: with U the frame's energy, a band below
    fragile[m] * U is fragile; hi[f] gets the largest upper bound of a fragile band, lo[f] a lower bound of
    the frame's largest band (both scaled like `out`).
    """
    n_frames = spec.shape[0]
    n_bins = spec.shape[1] // 2
    n_mels = starts.shape[0]
    check = hi.shape[0] > 0
    power = np.zeros((4, n_bins))
    sums = np.zeros((4, n_mels))
    energy = np.zeros(4)
    for f0 in range(0, n_frames, 4):
        nf = min(4, n_frames - f0)
        for j in range(nf):
            a = spec[f0 + j]
            p = power[j]
            for k in range(1, n_bins - 1):  # constant bounds: computed bounds stop LLVM from vectorising
                re = 0.5 * np.float64(a[2 * k]) - 0.25 * (np.float64(a[2 * k - 2]) + np.float64(a[2 * k + 2]))
                im = 0.5 * np.float64(a[2 * k + 1]) - 0.25 * (np.float64(a[2 * k - 1]) + np.float64(a[2 * k + 3]))
                p[k] = re * re + im * im
            re = 0.5 * np.float64(a[0]) - 0.5 * np.float64(a[2])  # DC: both neighbours are X[1]; X[0] is real
            p[0] = re * re
            re = 0.5 * np.float64(a[2 * n_bins - 2]) - 0.5 * np.float64(a[2 * n_bins - 4])  # Nyquist: X[n/2-1]
            p[n_bins - 1] = re * re
            if check:
                energy[j] = _sum_squares(a)
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
            if check:
                u = energy[j]
                top = 0.0
                worst = 0.0
                for m in range(n_mels):
                    p = row[m]
                    if p >= fragile[m] * u:
                        top = max(top, p * (1.0 - 2.0 * _REL_TARGET))
                    else:
                        q = math.sqrt(noise[m] * u)
                        r = math.sqrt(p)
                        worst = max(worst, (r + q) ** 2)
                        top = max(top, max(r - q, 0.0) ** 2)
                hi[f0 + j] = worst * scale
                lo[f0 + j] = top * scale


@numba.njit(nogil=True, cache=True)
def _gather_frames(wave, frames, n_fft, hop, out):  # pragma: no cover - compiled
    """Rows of `out` (float64) = the centred, zero-padded frames `frames` of `wave`, unscaled."""
    n = wave.shape[0]
    for i in range(frames.shape[0]):
        start = frames[i] * hop - n_fft // 2
        row = out[i]
        for t in range(n_fft):
            s = start + t
            row[t] = np.float64(wave[s]) if 0 <= s < n else 0.0


class LogMelExtractor:
    """Power mel spectrograms of many clips at once, equal to librosa.feature.melspectrogram (float64) transposed.

    Clips are cut in chunks of `chunk_frames` frames (enough to amortise MKL's setup per FFT call, few enough
    for the spectrum to stay in L2) shared by `threads` workers (default: torch's thread count), each running
    MKL and the kernel single-threaded: first every frame in float32, then the frames the error bound flags
    again in float64. Waves are 1-D: int16, or float already scaled to [-1, 1). `repaired` / `frames` count
    the frames of the last call and of that how many were redone in float64.
    """

    def __init__(self, cfg: LogMelConfig, chunk_frames: int = 128, threads: int | None = None,
                 float32: bool = False) -> None:
        import librosa

        self.cfg = cfg
        self.chunk_frames = chunk_frames
        self.threads = threads or torch.get_num_threads()
        self.float32 = float32
        self.frames = self.repaired = 0
        if cfg.n_fft % 2:
            raise ValueError("n_fft must be even (periodic Hann in the frequency domain)")
        basis = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin,
                                    fmax=cfg.fmax, htk=False, norm="slaney", dtype=np.float64)
        self.mel_basis = basis
        starts, stops = np.zeros(cfg.n_mels, np.int64), np.zeros(cfg.n_mels, np.int64)
        for m, row in enumerate(basis):
            nonzero = np.flatnonzero(row)
            if nonzero.size:  # an empty band (too many mels for the FFT size) stays all zero, as in librosa
                starts[m], stops[m] = nonzero[0], nonzero[-1] + 1
        self._starts, self._stops = starts, stops
        self._offsets = np.concatenate([[0], np.cumsum(stops - starts)[:-1]]).astype(np.int64)
        self._weights = np.concatenate([basis[m, starts[m]:stops[m]] for m in range(cfg.n_mels)])
        self._noise = _FFT32_NOISE * basis.sum(axis=1)  # G per band (see _FFT32_NOISE)
        kappa = (2.0 / _REL_TARGET) ** 2 * 1.01  # 2 sqrt(Q/P) + Q/P <= _REL_TARGET when P >= kappa Q
        self._fragile = self._noise * kappa
        self._none = np.zeros(0)
        self._lock = threading.Lock()
        self._redone = 0

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT: one per hop, plus one."""
        return 1 + n_samples // self.cfg.hop_length

    def __call__(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Power mel spectrogram (frames, n_mels) float32 of each wave (int16, or float already in [-1, 1))."""
        outs = [np.empty((self.n_frames(len(w)), self.cfg.n_mels), np.float32) for w in waves]
        tasks = [(i, f0, min(f0 + self.chunk_frames, len(out)))
                 for i, out in enumerate(outs) for f0 in range(0, len(out), self.chunk_frames)]
        self.frames = sum(len(out) for out in outs)
        self._redone = 0
        if not self.float32:
            self._parallel(lambda task: self._chunk(waves, outs, *task, np.float64, None, None), tasks)
            self.repaired = self.frames
            return outs
        his = [np.empty(len(out)) for out in outs]
        los = [np.empty(len(out)) for out in outs]
        exact = [False] * len(waves)  # clips switched to float64 for their remaining chunks
        self._parallel(lambda task: self._adaptive(waves, outs, *task, his, los, exact), tasks)
        repairs = []
        for i in range(len(outs)):
            flagged = np.flatnonzero(_needs_float64(his[i], los[i].max(initial=0.0)))
            repairs += [(i, flagged[j:j + self.chunk_frames]) for j in range(0, len(flagged), self.chunk_frames)]
        self.repaired = sum(len(frames) for _, frames in repairs) + self._redone
        self._parallel(lambda task: self._repair(waves, outs, *task), repairs)
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

    def _adaptive(self, waves, outs, i, f0, f1, his, los, exact) -> None:
        """A float32 chunk, redone at once in float64 (and the clip's later chunks done in float64 only) when
        most of its frames would need repair anyway: tonal sounds, where float32 only adds work."""
        if not exact[i]:
            self._chunk(waves, outs, i, f0, f1, np.float32, his, los)
            hi, lo = his[i][f0:f1], los[i][f0:f1]
            if np.count_nonzero(_needs_float64(hi, lo.max())) <= _SWITCH_FRACTION * (f1 - f0):
                return
            exact[i] = True
        with self._lock:
            self._redone += f1 - f0
        self._chunk(waves, outs, i, f0, f1, np.float64, None, None)
        his[i][f0:f1] = 0.0  # exact: nothing to repair
        los[i][f0:f1] = outs[i][f0:f1].max(axis=1)

    def _chunk(self, waves, outs, i, f0, f1, dtype, his, los) -> None:
        """Frames f0:f1 of wave i: padded samples assembled in `dtype`, FFT, mel kernel (+ bounds if float32)."""
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        wave = waves[i]
        n = (f1 - f0 - 1) * hop + n_fft
        start = f0 * hop - n_fft // 2  # first sample of the chunk in the unpadded wave
        lo, hi = max(start, 0), min(start + n, len(wave))
        chunk = np.empty(n, dtype)
        chunk[: lo - start] = 0.0
        chunk[lo - start : hi - start] = wave[lo:hi]
        chunk[max(hi - start, 0) :] = 0.0
        spec = torch.fft.rfft(torch.from_numpy(chunk).unfold(0, n_fft, hop), dim=1)  # MKL reads the strided view
        check = (his[i][f0:f1], los[i][f0:f1]) if his is not None else (self._none, self._none)
        _windowed_mel(spec.numpy().view(dtype), self._starts, self._stops, self._offsets, self._weights,
                      self._scale(wave), outs[i][f0:f1], self._fragile, self._noise, *check)

    def _repair(self, waves, outs, i, frames) -> None:
        """Recompute the given frames of wave i with a float64 FFT."""
        buf = np.empty((len(frames), self.cfg.n_fft))
        _gather_frames(waves[i], frames, self.cfg.n_fft, self.cfg.hop_length, buf)
        spec = torch.fft.rfft(torch.from_numpy(buf), dim=1)
        out = np.empty((len(frames), self.cfg.n_mels), np.float32)
        _windowed_mel(spec.numpy().view(np.float64), self._starts, self._stops, self._offsets, self._weights,
                      self._scale(waves[i]), out, self._fragile, self._noise, self._none, self._none)
        outs[i][frames] = out

    @staticmethod
    def _scale(wave: np.ndarray) -> float:
        return _INT16_POWER_SCALE if wave.dtype == np.int16 else 1.0


def power_to_db(power: np.ndarray, top_db: float = 80.0, amin: float = 1e-10) -> np.ndarray:
    """Reference dB conversion: 10 log10(max(amin, p)), floored at the clip's maximum minus top_db."""
    db = 10.0 * np.log10(np.maximum(amin, power))
    return np.maximum(db, db.max() - top_db) if db.size else db


def _read_batches(items: Sequence[tuple[str, Path]], batch_samples: int) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    """Clips in input order, in batches closed as soon as they hold `batch_samples` samples."""
    fnames: list[str] = []
    waves: list[np.ndarray] = []
    size = 0
    for fname, path in items:
        wave = load_wav(path)
        fnames.append(fname)
        waves.append(wave)
        size += len(wave)
        if size >= batch_samples:
            yield fnames, waves
            fnames, waves, size = [], [], 0
    if fnames:
        yield fnames, waves


def _prefetched(batches: Iterator, depth: int = 1) -> Iterator:
    """Run a producer in a background thread, `depth` items ahead; its exceptions re-raise in the consumer."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        box.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put((done, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            box.put((done, exc))

    thread = threading.Thread(target=produce, name="fsdlib-read", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = box.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                box.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def build_feature_store(items: Sequence[tuple[str, Path]], out_prefix: Path, cfg: LogMelConfig,
                        batch_seconds: float = 60.0, progress: bool = True) -> None:
    """Write `{out_prefix}.logmel.arrow` (power mel) and `{out_prefix}.wave.arrow` (int16) for `items`, in order.

    Streams in batches of about `batch_seconds` of audio: one batch is read ahead and the previous one written
    in background threads while the current one is transformed, so memory stays bounded whatever the size.
    """
    out_prefix = Path(out_prefix)
    if cfg.sample_rate != SAMPLE_RATE:
        raise FsdError(f"log-mel sample_rate is {cfg.sample_rate} Hz but clips are read at {SAMPLE_RATE} Hz")
    repeated = [name for name, count in Counter(fname for fname, _ in items).items() if count > 1]
    if repeated:
        raise FsdError(f"clip {repeated[0]} is listed more than once")
    extractor = LogMelExtractor(cfg)
    meta = {"config": dataclasses.asdict(cfg), "sample_rate": cfg.sample_rate}
    logmel_path = out_prefix.parent / f"{out_prefix.name}.logmel.arrow"
    wave_path = out_prefix.parent / f"{out_prefix.name}.wave.arrow"
    batch_samples = max(1, int(batch_seconds * SAMPLE_RATE))
    with (StoreWriter(logmel_path, "logmel", np.float32, cfg.n_mels, meta) as logmel_store,
          StoreWriter(wave_path, "wave", np.int16, 1, meta) as wave_store,
          progress_bar(f"features {out_prefix.name}", len(items), enabled=progress) as advance,
          ThreadPoolExecutor(1, thread_name_prefix="fsdlib-write") as writer):

        def write(fnames: list[str], waves: list[np.ndarray], mels: list[np.ndarray]) -> None:
            logmel_store.write(fnames, mels)
            wave_store.write(fnames, waves)
            advance(len(fnames))

        pending = None
        for fnames, waves in _prefetched(_read_batches(items, batch_samples)):
            mels = extractor(waves)
            if pending is not None:
                pending.result()  # one batch in writing, one computed, one read ahead: bounded memory
            pending = writer.submit(write, fnames, waves, mels)
        if pending is not None:
            pending.result()
