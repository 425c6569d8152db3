"""Log-mel: agreement with librosa (float64) to 1e-3 dB, frame counts, silence, and the streaming store builder."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import librosa
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import soundfile as sf
import torch
from conftest import accepted_wavs

from fsdlib.audio import load_wav
from fsdlib.clip_input import logmel_to_input
from fsdlib.errors import FsdError
from fsdlib.features import LogMelExtractor, build_feature_store
from fsdlib.settings import FeatureSettings, LogMelConfig
from fsdlib.store import FeatureStore

SR = 44100
CFG = LogMelConfig()


def librosa_mel(wave: np.ndarray) -> np.ndarray:
    """The reference: librosa in float64 (filterbank too), transposed to (frames, n_mels)."""
    y = wave.astype(np.float64) / 32768.0 if wave.dtype == np.int16 else wave.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns when a clip is shorter than n_fft
        mel = librosa.feature.melspectrogram(
            y=y, sr=SR, n_fft=CFG.n_fft, hop_length=CFG.hop_length, fmin=CFG.fmin, fmax=CFG.fmax,
            n_mels=CFG.n_mels, window="hann", center=True, pad_mode="constant", power=2.0, htk=False,
            norm="slaney", dtype=np.float64)
    return mel.T


def max_db_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """Largest dB difference over the cells within 80 dB of the reference clip's maximum."""
    ref_db = 10 * np.log10(np.maximum(reference, 1e-10))
    our_db = 10 * np.log10(np.maximum(ours.astype(np.float64), 1e-10))
    kept = ref_db >= ref_db.max() - 80.0
    return float(np.abs(ref_db - our_db)[kept].max())


def make_signals() -> dict[str, np.ndarray]:
    """Noise (one clip of 30 s), tones, a chirp, a clip shorter than n_fft, a very quiet tail, DC, clicks."""
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    tones = np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 5000 * t)
    loud_then_quiet = np.concatenate([rng.standard_normal(2 * SR) * 20000, rng.standard_normal(2 * SR) * 3])
    clicks = np.zeros(2 * SR)
    clicks[::5000] = 32767
    return {
        "noise_30s": rng.standard_normal(30 * SR) * 3000,
        "tone_1k": np.sin(2 * np.pi * 1000 * t) * 20000,
        "two_tones": tones * 15000,
        "tone_15k_full_scale": np.sin(2 * np.pi * 15000 * t) * 32767,
        "chirp": librosa.chirp(fmin=20, fmax=20000, sr=SR, duration=2.0) * 30000,
        "short_1000": rng.standard_normal(1000) * 3000,
        "quiet_tail": loud_then_quiet,
        "dc_offset": 20000 + rng.integers(-2, 3, 2 * SR),  # zero padding makes steps at both ends
        "clicks": clicks,
        "square_441": np.sign(np.sin(2 * np.pi * 441 * t[: 2 * SR])) * 30000,
        "tone_plus_lsb_noise": np.sin(2 * np.pi * 700 * t[: 2 * SR]) * 30000 + rng.standard_normal(2 * SR) * 0.7,
        "silence_then_burst": np.concatenate([np.zeros(SR), rng.standard_normal(SR // 2) * 30000]),
        "tone_25hz": np.sin(2 * np.pi * 25 * t[: 2 * SR]) * 30000,
    }


SIGNALS = {name: np.clip(np.round(x), -32768, 32767).astype(np.int16) for name, x in make_signals().items()}


@pytest.fixture(scope="module")
def extractor() -> LogMelExtractor:
    return LogMelExtractor(CFG)


@pytest.fixture(scope="module")
def ours(extractor: LogMelExtractor) -> dict[str, np.ndarray]:
    return dict(zip(SIGNALS, extractor(list(SIGNALS.values())), strict=True))


@pytest.mark.parametrize("name", list(SIGNALS))
def test_agrees_with_librosa_float64(name: str, ours: dict[str, np.ndarray]) -> None:
    reference = librosa_mel(SIGNALS[name])
    assert ours[name].dtype == np.float32
    assert ours[name].shape == reference.shape
    assert max_db_error(ours[name], reference) < 1e-3


@pytest.mark.parametrize("n_samples", [1, 346, 347, 2559, 2560, 2561, 44100, 30 * 44100 + 5])
def test_frame_count(extractor: LogMelExtractor, n_samples: int) -> None:
    wave = np.ones(n_samples, np.int16)
    (mel,) = extractor([wave])
    assert mel.shape == (1 + n_samples // CFG.hop_length, CFG.n_mels) == librosa_mel(wave).shape


def test_float_input_matches_int16(extractor: LogMelExtractor) -> None:
    wave = SIGNALS["two_tones"]
    from_int, from_float = extractor([wave, wave.astype(np.float32) / 32768])
    np.testing.assert_allclose(from_float, from_int, rtol=1e-6, atol=1e-12)


def test_threads_and_chunks_do_not_change_results(ours: dict[str, np.ndarray]) -> None:
    """Chunks of 37 frames on one thread and on four give the default extractor's spectrograms. The thread count is
    explicit: torch's default is 1 under pytest-xdist (conftest.py), which would leave the threaded path untested;
    the first two workers each hold a chunk until the other has one too, so two threads surely share the work."""
    waves = list(SIGNALS.values())
    single = LogMelExtractor(CFG, chunk_frames=37, threads=1)(waves)
    for got, expected in zip(single, ours.values(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    threaded = LogMelExtractor(CFG, chunk_frames=37, threads=4)
    chunk, meet, lock, workers = threaded._chunk, threading.Barrier(2), threading.Lock(), set()

    def first_two_workers_meet(*task) -> None:
        assert threading.current_thread() is not threading.main_thread(), "the chunks ran on the calling thread"
        with lock:
            new_worker = threading.get_ident() not in workers
            workers.add(threading.get_ident())
            wait = new_worker and len(workers) <= 2
        if wait:
            meet.wait(timeout=60)  # reached at once by the second worker; the timeout only ends a broken run
        chunk(*task)

    threaded._chunk = first_two_workers_meet
    threads_before = torch.get_num_threads()
    got = threaded(waves)
    assert torch.get_num_threads() == threads_before  # the workers' single-thread setting does not leak
    assert len(workers) >= 2
    for mel, expected in zip(got, single, strict=True):
        np.testing.assert_allclose(mel, expected, rtol=1e-6)


def test_silent_clip_is_zero_power_and_a_zero_network_input(extractor: LogMelExtractor) -> None:
    (mel,) = extractor([np.zeros(SR, np.int16)])
    assert np.all(mel == 0.0)
    x = logmel_to_input(torch.from_numpy(mel.T.copy())[None])
    assert torch.equal(x, torch.zeros_like(x))


def write_clips(folder: Path, lengths: list[int]) -> list[tuple[str, Path]]:
    """Tiny 16-bit WAVs (noise; the one of length 3000 silent), listed in a deliberately unsorted order."""
    rng = np.random.default_rng(3)
    items = []
    for i, n in enumerate(lengths):
        name = f"{(7 * i) % len(lengths):03d}.wav"
        data = np.zeros(n, np.int16) if n == 3000 else (rng.standard_normal(n) * 2000).astype(np.int16)
        sf.write(folder / name, data, SR, subtype="PCM_16")
        items.append((name, folder / name))
    return items


def test_build_feature_store(tmp_path: Path, extractor: LogMelExtractor) -> None:
    items = write_clips(tmp_path, [9000, 1000, 3000, 44100, 200, 15000])
    build_feature_store(items, tmp_path / "out" / "curated", FeatureSettings(batch_seconds=0.5), progress=False)
    logmel = FeatureStore.open(tmp_path / "out" / "curated.logmel.arrow", kind="logmel")
    wave = FeatureStore.open(tmp_path / "out" / "curated.wave.arrow", kind="wave")
    names = [name for name, _ in items]
    assert logmel.fnames == names and wave.fnames == names
    assert logmel.metadata["config"] == {"sample_rate": 44100, "n_mels": 128, "n_fft": 2560, "hop_length": 347,
                                         "fmin": 20.0, "fmax": 22050.0}
    assert logmel.inner_dim == 128 and wave.inner_dim == 1
    waves = [load_wav(path) for _, path in items]
    for i, mel in enumerate(extractor(waves)):
        np.testing.assert_array_equal(wave[i], waves[i])
        np.testing.assert_allclose(logmel[i], mel, rtol=1e-6)
    assert np.all(np.isfinite(logmel.get(items[2][0])))
    with pa.memory_map(str(tmp_path / "out" / "curated.logmel.arrow")) as source:
        assert ipc.open_file(source).num_record_batches > 1  # streamed in batches, not all at once


def test_build_feature_store_names_a_bad_file_and_writes_nothing(tmp_path: Path) -> None:
    items = write_clips(tmp_path, [5000, 5000])
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(FsdError) as err:
        build_feature_store([*items, ("broken.wav", bad)], tmp_path / "out" / "test", FeatureSettings(), progress=False)
    assert err.value.path == bad
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_feature_store_of_hostile_but_valid_clips_is_finite(tmp_path: Path) -> None:
    paths = accepted_wavs(tmp_path / "wavs")
    build_feature_store(list(paths.items()), tmp_path / "out" / "hostile", FeatureSettings(), progress=False)
    store = FeatureStore.open(tmp_path / "out" / "hostile.logmel.arrow")
    assert store.fnames == list(paths)
    for i in range(len(store)):
        assert np.isfinite(store[i]).all() and len(store[i]) >= 1
    assert not store.get("silent.wav").any()
