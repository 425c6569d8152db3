"""Shared fixtures: a tiny hand-made FSDKaggle2019 root written with soundfile, and hostile WAV files."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # before numpy and torch start their thread pools
    # Workers share the cores: each gets its share of threads (and so do the stages it runs), so that no OpenMP
    # pool spins waiting for cores another worker holds.
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from filelock import FileLock
from pipeline import make_repo, repro

from fsdlib.audio import SAMPLE_RATE
from fsdlib.vocabulary import CLASSES_80

CLASSES = CLASSES_80[:4]
ACCEPTED = {  # hostile but valid WAVs, name: (seconds, sample rate, channels, subtype)
    "short_0.05s.wav": (0.05, 44100, 1, "PCM_16"),
    "long_30s.wav": (30.0, 44100, 1, "PCM_16"),
    "pcm_u8.wav": (0.3, 44100, 1, "PCM_U8"),
    "pcm_24.wav": (0.3, 44100, 1, "PCM_24"),
    "float32.wav": (0.3, 44100, 1, "FLOAT"),
    "stereo.wav": (0.3, 44100, 2, "PCM_16"),
    "six_channels.wav": (0.3, 44100, 6, "PCM_16"),
    "rate_8k.wav": (0.3, 8000, 1, "PCM_16"),
    "rate_22k.wav": (0.3, 22050, 1, "PCM_16"),
    "rate_96k.wav": (0.3, 96000, 1, "PCM_16"),
    "spaces and ünïcödé 音.wav": (0.3, 44100, 1, "PCM_16"),
}


def write_wav(path: Path, seconds: float = 0.5, sr: int = 44100, channels: int = 1, subtype: str = "PCM_16",
              seed: int = 0) -> Path:
    """A short noise WAV in the requested format."""
    rng = np.random.default_rng(seed)
    data = 0.1 * rng.standard_normal((max(1, int(seconds * sr)), channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data if channels > 1 else data[:, 0], sr, subtype=subtype)
    return path


def accepted_wavs(folder: Path) -> dict[str, Path]:
    """Every file of ACCEPTED, and a silent one ("silent.wav", 0.5 s of zeros)."""
    out = {name: write_wav(folder / name, seconds=s, sr=sr, channels=ch, subtype=st, seed=i)
           for i, (name, (s, sr, ch, st)) in enumerate(ACCEPTED.items())}
    silent = folder / "silent.wav"
    sf.write(str(silent), np.zeros(SAMPLE_RATE // 2, np.int16), SAMPLE_RATE, subtype="PCM_16")
    out["silent.wav"] = silent
    return out


def refused_wavs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Broken .wav files and the words the error about each must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_wav(folder / "good_source.wav", seconds=0.3).read_bytes()
    cases = {
        "truncated.wav": (good[: len(good) // 2], "truncated"),
        "zero_bytes.wav": (b"", "empty file"),
        "wrong_header.wav": (b"RIFX" + good[4:8] + b"JUNK" + good[12:], "not a WAV"),
        "text.wav": (b"hello, I am not audio at all\n" * 10, "not a WAV"),
        "bad_format_chunk.wav": (good[:20] + b"\xff\xff" + good[22:], "unreadable"),
    }
    out = {}
    for name, (data, words) in cases.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, words)
    (folder / "good_source.wav").unlink()
    return out


def make_root(root: Path, n_curated: int = 10, n_noisy: int = 10, n_test: int = 4, test_labels: bool = True) -> Path:
    """Write a minimal valid dataset root with 4 classes."""
    rng = np.random.default_rng(1)
    rows = {}
    for subset, n in (("curated", n_curated), ("noisy", n_noisy), ("test", n_test)):
        names = [f"{subset[0]}{i:07d}.wav" for i in range(n)]
        labels = [",".join(sorted(set(rng.choice(CLASSES, size=rng.integers(1, 3)).tolist()))) for _ in names]
        folder = root / ("test" if subset == "test" else f"train_{subset}")
        for i, f in enumerate(names):
            write_wav(folder / f, seconds=0.2 + 0.1 * (i % 3), seed=i)
        rows[subset] = pd.DataFrame({"fname": names, "labels": labels})
    rows["curated"].to_csv(root / "train_curated.csv", index=False)
    rows["noisy"].to_csv(root / "train_noisy.csv", index=False)
    sub = pd.DataFrame({"fname": rows["test"]["fname"], **{c: 0.0 for c in CLASSES}})
    sub.to_csv(root / "sample_submission.csv", index=False)
    if test_labels:
        test = rows["test"].assign(usage=["Public", "Private"] * (n_test // 2) + ["Private"] * (n_test % 2),
                                   freesound_id=range(n_test), license="CC0")
        test.to_csv(root / "test_post_competition.csv", index=False)
    return root


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "root")


def _shared_temp(factory: pytest.TempPathFactory) -> Path:
    """The run's base temporary folder: under pytest-xdist the one above every worker's own."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_tiny_pipeline(shared: Path) -> Path:
    """The tiny pipeline (tests/pipeline.py) under `shared`, built once: the first caller builds it while the others
    wait on a file lock."""
    path, built = shared / "tiny_pipeline" / "repo", shared / "tiny_pipeline" / "built"
    with FileLock(str(shared / "tiny_pipeline.lock")):
        if not built.exists():
            shutil.rmtree(path.parent, ignore_errors=True)
            ran = repro(make_repo(path))
            assert "synth" in ran and "ensemble" in ran
            built.touch()
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of the tiny pipeline run last, so that under pytest-xdist the other tests run while it is built."""
    items.sort(key=lambda item: "tiny_pipeline" in getattr(item, "fixturenames", ()))
    config.stash[NEEDS_PIPELINE] = any("tiny_pipeline" in getattr(item, "fixturenames", ()) for item in items)


NEEDS_PIPELINE = pytest.StashKey[bool]()


@pytest.fixture(scope="session", autouse=True)
def _build_tiny_pipeline_early(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Under pytest-xdist, worker gw0 starts building the tiny pipeline at once, in a thread (it waits on DVC's
    processes), while the workers run the other tests; the fixture below then finds it built or waits for it."""
    thread = None
    if os.environ.get("PYTEST_XDIST_WORKER") == "gw0" and request.config.stash.get(NEEDS_PIPELINE, False):
        thread = threading.Thread(target=build_tiny_pipeline, args=(_shared_temp(tmp_path_factory),), daemon=True)
        thread.start()
    yield
    if thread is not None:
        thread.join()


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline, run once per test run and shared by the pytest-xdist workers. Read it as it is; a test
    that changes anything works on a `pipeline.copy_repo` of it."""
    return build_tiny_pipeline(_shared_temp(tmp_path_factory))


def random_truth(rng: np.random.Generator, n: int = 300, c: int = 12) -> np.ndarray:
    """Multi-hot labels: every clip one label, some a few more."""
    truth = rng.random((n, c)) < 0.05
    truth[np.arange(n), rng.integers(0, c, n)] = True
    return truth


def noisy_scores(rng: np.random.Generator, truth: np.ndarray, signal: float) -> np.ndarray:
    """Probabilities whose logits are `signal` × truth plus unit Gaussian noise (signal 0: an untrained snapshot)."""
    return 1.0 / (1.0 + np.exp(-(signal * truth + rng.standard_normal(truth.shape))))
