import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fsdlib.audio import SAMPLE_RATE, load_wav, pcm16_data
from fsdlib.errors import FsdError
from fsdlib.synth import SynthConfig, class_sound, generate_demo, plan_demo, render_clip
from fsdlib.vocabulary import CLASSES_80

TINY = SynthConfig(seed=3, n_classes=5, n_curated=20, n_noisy=30, n_test=15, curated_duration=(0.3, 2.0),
                   noisy_duration=(1.0, 2.0), test_duration=(0.3, 1.5))
FOLDERS = {"train_curated.csv": "train_curated", "train_noisy.csv": "train_noisy",
           "test_post_competition.csv": "test"}
DURATIONS = {"train_curated": TINY.curated_duration, "train_noisy": TINY.noisy_duration,
             "test": TINY.test_duration}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "root"
    generate_demo(root, TINY, progress=True)
    return root


def _labels(field: str) -> list[str]:
    return field.split(",")


def test_layout_and_csvs(demo_root: Path) -> None:
    assert sorted(p.name for p in demo_root.iterdir()) == sorted(
        ["sample_submission.csv", "test_post_competition.csv", "train_curated.csv", "train_noisy.csv",
         "train_curated", "train_noisy", "test"])
    all_fnames: list[str] = []
    for csv, folder in FOLDERS.items():
        df = pd.read_csv(demo_root / csv)
        assert sorted(p.name for p in (demo_root / folder).iterdir()) == sorted(df["fname"])
        assert all(re.fullmatch(r"[0-9a-f]{8}\.wav", f) for f in df["fname"])
        all_fnames += list(df["fname"])
    assert len(all_fnames) == len(set(all_fnames)) == 20 + 30 + 15

    test = pd.read_csv(demo_root / "test_post_competition.csv")
    assert list(test.columns) == ["fname", "labels", "usage", "freesound_id", "license"]
    assert (test["usage"] == "Public").sum() == round(0.25 * 15)
    assert set(test["usage"]) == {"Public", "Private"}
    submission = pd.read_csv(demo_root / "sample_submission.csv")
    assert list(submission["fname"]) == list(test["fname"])


def test_class_names_are_the_official_prefix(demo_root: Path) -> None:
    submission = pd.read_csv(demo_root / "sample_submission.csv")
    assert list(submission.columns) == ["fname", *CLASSES_80[:5]]
    assert (submission.drop(columns="fname").to_numpy() == 0).all()
    assert TINY.classes == CLASSES_80[:5]
    for csv in FOLDERS:
        for field in pd.read_csv(demo_root / csv)["labels"]:
            names = _labels(field)
            assert set(names) <= set(CLASSES_80[:5]) and 1 <= len(names) <= TINY.max_labels


def test_mixture_labels_are_quoted(demo_root: Path) -> None:
    text = (demo_root / "train_curated.csv").read_text()
    mixtures = [line for line in text.splitlines()[1:] if line.count(",") > 1]
    assert mixtures and all(line.split(",", 1)[1].startswith('"') for line in mixtures)


def test_audio_is_mono_pcm16_with_declared_durations(demo_root: Path) -> None:
    silent, short = 0, 0
    for folder, (lo, hi) in DURATIONS.items():
        for path in (demo_root / folder).iterdir():
            info = sf.info(str(path))
            assert (info.channels, info.samplerate, info.subtype) == (1, SAMPLE_RATE, "PCM_16")
            assert round(lo * SAMPLE_RATE) <= info.frames <= round(hi * SAMPLE_RATE)
            assert pcm16_data(path) == (44, info.frames)  # canonical (fsdlib/layout.py): read in place
            wave = load_wav(path)
            silent += int(not wave.any())
            short += int(info.frames < 0.5 * SAMPLE_RATE)
            if wave.any():
                assert -31 < 20 * np.log10(np.abs(wave.astype(float)).max() / 32767) < -2.9
    assert silent >= 1 and short >= 1


def test_same_seed_gives_identical_bytes(demo_root: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    again.mkdir()
    (again / "stale.txt").write_text("left over")
    generate_demo(again, TINY, progress=False)
    files = sorted(p.relative_to(demo_root) for p in demo_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (demo_root / rel).read_bytes() == (again / rel).read_bytes(), rel

    other = tmp_path / "other"
    generate_demo(other, replace(TINY, seed=4), progress=False)
    assert (other / "train_curated.csv").read_bytes() != (demo_root / "train_curated.csv").read_bytes()


def test_written_labels_match_the_plan(demo_root: Path) -> None:
    plan = plan_demo(TINY)
    for csv, folder in FOLDERS.items():
        subset = {"train_curated": "curated", "train_noisy": "noisy", "test": "test"}[folder]
        written = dict(pd.read_csv(demo_root / csv)[["fname", "labels"]].itertuples(index=False))
        clips = [c for c in plan if c.subset == subset]
        assert {c.fname: ",".join(CLASSES_80[i] for i in c.labels) for c in clips} == written
        if subset != "noisy":
            assert all(c.labels == c.true_labels for c in clips)


@pytest.mark.parametrize("label_noise", [0.0, 0.3, 0.4])
def test_noisy_label_corruption_rate(label_noise: float) -> None:
    cfg = SynthConfig(n_classes=10, n_curated=0, n_noisy=1000, n_test=0, label_noise=label_noise)
    noisy = [c for c in plan_demo(cfg) if c.subset == "noisy"]
    wrong = np.mean([c.labels != c.true_labels for c in noisy])
    assert wrong == pytest.approx(label_noise)
    assert all(1 <= len(c.labels) <= cfg.max_labels for c in noisy)


@pytest.mark.parametrize(("n_classes", "max_labels"), [(1, 3), (5, 1), (10, 2), (10, 3)])
def test_label_counts(n_classes: int, max_labels: int) -> None:
    cfg = SynthConfig(n_classes=n_classes, n_curated=500, n_noisy=500, n_test=100, max_labels=max_labels)
    plan = plan_demo(cfg)
    for clip in plan:
        for labels in (clip.labels, clip.true_labels):
            assert 1 <= len(labels) <= min(max_labels, n_classes) and len(set(labels)) == len(labels)
            assert all(0 <= c < n_classes for c in labels)
    single = np.mean([len(c.true_labels) == 1 for c in plan])
    assert single > 0.6
    if min(max_labels, n_classes) > 1:
        assert single < 0.8


def test_every_class_is_distinct() -> None:
    sounds = [class_sound(i) for i in range(80)]
    assert len(set(sounds)) == 80


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_classes": 0}, "n_classes"),
        ({"n_classes": 81}, "n_classes"),
        ({"n_curated": -1}, "n_curated"),
        ({"n_test": -5}, "n_test"),
        ({"noisy_duration": (3.0, 1.0)}, "noisy_duration"),
        ({"curated_duration": (0.0, 1.0)}, "curated_duration"),
        ({"max_labels": 0}, "max_labels"),
        ({"label_noise": 1.5}, "label_noise"),
        ({"domain_shift": -0.1}, "domain_shift"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_config(changes: dict, message: str) -> None:
    with pytest.raises(FsdError, match=message):
        SynthConfig(**changes)


def _band_spectrum(wave: np.ndarray) -> np.ndarray:
    """Mean log power in 48 log-spaced bands, level-normalised: a crude log-mel average."""
    x = wave.astype(np.float64) / 32768
    frames = np.lib.stride_tricks.sliding_window_view(x, 2048)[::1024] * np.hanning(2048)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    edges = np.geomspace(50, 20_000, 49) * 2048 / SAMPLE_RATE
    bins = np.arange(power.shape[1])
    bands = [power[:, (bins >= a) & (bins < max(b, a + 1))].sum(1) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    bands = np.stack(bands, 1)
    spectrum = np.log(bands.mean(0) + 1e-12)
    return spectrum - spectrum.max()


def test_classes_are_learnable_and_not_by_loudness() -> None:
    cfg = SynthConfig(seed=5, n_classes=5, n_curated=80, n_noisy=0, n_test=0, curated_duration=(0.5, 1.5))
    clips = [c for c in plan_demo(cfg) if len(c.true_labels) == 1 and not c.silent]
    waves = [render_clip(c, cfg) for c in clips]
    y = np.array([c.true_labels[0] for c in clips])
    rank = np.array([np.sum(y[:i] == k) for i, k in enumerate(y)])
    train = rank % 2 == 0

    def nearest_centroid_accuracy(features: np.ndarray) -> float:
        centroids = np.stack([features[train & (y == k)].mean(0) for k in range(cfg.n_classes)])
        guess = np.argmin(((features[~train, None] - centroids[None]) ** 2).sum(-1), axis=1)
        return float(np.mean(guess == y[~train]))

    assert nearest_centroid_accuracy(np.stack([_band_spectrum(w) for w in waves])) > 0.8
    loudness = np.array([[np.log(np.abs(w.astype(float)).max()), len(w) / SAMPLE_RATE] for w in waves])
    assert nearest_centroid_accuracy(loudness) < 0.5
