"""The FSDKaggle2019-sized generator (scripts/make_scale_dataset.py): counts, durations and a root fsdlib reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pipeline import load_script

from fsdlib.audio import load_wav, pcm16_data
from fsdlib.dataset import read_dataset

scale = load_script("make_scale_dataset")


def test_full_size_plan_has_the_real_counts_and_hours() -> None:
    clips = scale.plan(1.0, 0)
    for part, (count, hours) in {"curated": (4_970, 10.5), "noisy": (19_815, 80.0), "test": (4_481, 9.47)}.items():
        mine = [c for c in clips if c.part == part]
        seconds = np.array([c.n_samples for c in mine]) / scale.SR
        low, high = scale.RANGES[part]
        assert len(mine) == count
        assert abs(seconds.sum() / 3600 - hours) < 0.01 * hours, part
        assert low - 1e-4 <= seconds.min() and seconds.max() <= high + 1e-4, part
    first = [c.labels[0] for c in clips if c.part == "curated"]
    assert set(first) == set(range(80)) and len({c.fname for c in clips}) == len(clips)


def test_a_small_root_is_read_by_the_pipeline(tmp_path: Path) -> None:
    clips = scale.generate(tmp_path / "root", 1 / 500, seed=3)
    dataset = read_dataset(tmp_path / "root")
    assert (len(dataset.curated), len(dataset.noisy), len(dataset.test)) == (10, 40, 9)
    assert dataset.test.labels is not None and len(dataset.classes) == 80
    loops = scale.class_loops(3)
    for clip in clips[:: 7]:
        path = tmp_path / "root" / scale.FOLDERS[clip.part] / clip.fname
        assert pcm16_data(path) == (44, clip.n_samples)  # canonical: the waveform store can read it in place
        np.testing.assert_array_equal(load_wav(path), scale.clip_samples(clip, loops))
    assert scale.plan(1 / 500, 3) == clips
