"""Shared fixtures: a tiny hand-made FSDKaggle2019 root written with soundfile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fsdlib.vocabulary import CLASSES_80

CLASSES = CLASSES_80[:4]


def write_wav(path: Path, seconds: float = 0.5, sr: int = 44100, channels: int = 1, subtype: str = "PCM_16",
              seed: int = 0) -> Path:
    """A short noise WAV in the requested format."""
    rng = np.random.default_rng(seed)
    data = 0.1 * rng.standard_normal((max(1, int(seconds * sr)), channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data if channels > 1 else data[:, 0], sr, subtype=subtype)
    return path


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
