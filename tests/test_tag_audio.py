"""Tagging beyond WAV: FLAC, OGG and MP3 files, and windows with timestamps over recordings of any length read in
bounded memory (`fsd tag --segment`)."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fsdlib.audio import SAMPLE_RATE, read_audio, read_windows, window_starts
from fsdlib.errors import FsdError
from fsdlib.export import export_ensemble
from fsdlib.models import build_network
from fsdlib.settings import InferenceConfig, LogMelConfig
from fsdlib.spec import model_spec
from fsdlib.tagger import Member, Tagger, expand_paths, load_tagger, render_tags

SUBTYPES = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}
CLASSES = ["Bark", "Meow", "Chirp"]


def write_tone(path: Path, seconds: float, freq: float = 440.0, sr: int = SAMPLE_RATE, channels: int = 1) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.repeat(x[:, None], channels, axis=1), sr, subtype=SUBTYPES[path.suffix[1:]])
    return path


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> Tagger:
    """A one-member ensemble of a tiny untrained ResNet (two snapshots), on the CPU."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("member")
    spec = model_spec({"family": "resnet", "crop": 32, "tta_pads": [4],
                       "arch": {"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "hidden": 16}}, "T")
    snapshots = []
    for cycle in (1, 2):
        path = folder / f"snapshot_{cycle}.pt"
        torch.save(build_network(spec, len(CLASSES)).state_dict(), path)
        snapshots.append(path)
    member = Member("T", spec, tuple(snapshots), 1.0, spec.tta_pads)
    return Tagger.from_members([member], CLASSES, LogMelConfig(), InferenceConfig(), device="cpu")


@pytest.mark.parametrize("duration, segment, hop, expected", [
    (10.0, 3.0, 2.0, [0.0, 2.0, 4.0, 6.0, 7.0]), (9.0, 3.0, 3.0, [0.0, 3.0, 6.0]), (2.0, 5.0, 1.0, [0.0]),
    (5.0, 2.0, 4.0, [0.0, 3.0]),
])
def test_windows_cover_the_recording(duration: float, segment: float, hop: float, expected: list[float]) -> None:
    starts = window_starts(duration, segment, hop)
    assert starts == pytest.approx(expected)
    assert min(starts[-1] + segment, duration) == pytest.approx(duration)


def test_bad_window_settings() -> None:
    with pytest.raises(FsdError, match="must be positive"):
        window_starts(10.0, 0.0, 1.0)


def test_read_windows_of_a_flac_keeps_frequency_and_covers_the_file(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "long.flac", 7.3, freq=1000.0, sr=48000, channels=2)
    windows = list(read_windows(path, 2.0, 2.0))
    assert [round(s, 3) for s, _, _ in windows] == [0.0, 2.0, 4.0, 5.3]
    assert windows[-1][1] == pytest.approx(7.3)
    for _, _, wave in windows:
        assert wave.dtype == np.int16 and len(wave) == pytest.approx(2.0 * SAMPLE_RATE, abs=2)
        spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
        assert np.argmax(spectrum) * SAMPLE_RATE / len(wave) == pytest.approx(1000.0, abs=2.0)


def test_read_windows_memory_does_not_grow_with_the_recording(tmp_path: Path) -> None:
    """Ten minutes of audio in 5 s windows: Python's peak allocation stays near one window (a whole-file read would
    allocate 10 min x 44.1 kHz x 8 bytes = 212 MB of float64)."""
    path = tmp_path / "ten_minutes.wav"
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16") as f:
        block = (0.1 * np.sin(np.arange(SAMPLE_RATE * 10) * 0.05)).astype(np.float32)
        for _ in range(60):
            f.write(block)
    tracemalloc.start()
    count = sum(1 for _ in read_windows(path, 5.0, 5.0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 120
    assert peak < 20e6, f"peak {peak / 1e6:.1f} MB"


def test_tag_files_in_every_format(tagger: Tagger, tmp_path: Path) -> None:
    """FLAC, OGG and MP3 files are found in folders and tagged like the WAV reader's waveform of them."""
    for fmt in SUBTYPES:
        write_tone(tmp_path / f"tone.{fmt}", 1.0, freq=600.0, sr=22050 if fmt == "flac" else SAMPLE_RATE)
    (tmp_path / "notes.txt").write_text("not audio")
    files = expand_paths([tmp_path])
    assert sorted(p.suffix for p in files) == [".flac", ".mp3", ".ogg", ".wav"]
    tags = list(tagger.tag_files(files, top_k=3))
    assert all(t.error is None and len(t.labels) == 3 for t in tags)
    flac = next(t for t in tags if t.path.suffix == ".flac")
    expected = tagger.predict([read_audio(tmp_path / "tone.flac")])[0]
    assert dict(flac.labels) == pytest.approx({c: float(v) for c, v in zip(CLASSES, expected, strict=True)}, abs=1e-6)


def test_tag_windows_timestamps_cover_the_file_and_match_whole_clips(tagger: Tagger, tmp_path: Path) -> None:
    path = write_tone(tmp_path / "rec.ogg", 5.5, freq=800.0)
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC" + bytes(100))
    tags = list(tagger.tag_windows([path, bad], segment=2.0, hop=1.5, top_k=2, batch=2))
    windows = [t for t in tags if t.path == path]
    assert [(t.start, round(t.end, 3)) for t in windows] == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0), (3.5, 5.5)]
    assert tags[-1].path == bad and "unreadable FLAC" in tags[-1].error
    first = list(read_windows(path, 2.0, 1.5))[0][2]
    assert dict(windows[0].labels) == pytest.approx(
        {c: float(v) for c, v in zip(CLASSES, tagger.predict([first])[0], strict=True) if c in dict(windows[0].labels)},
        abs=1e-6)
    csv = render_tags(tags, "csv").splitlines()
    assert csv[0] == "file,start,end,rank,label,score,error"
    assert csv[1].startswith(f'"{path}",0.000,2.000,1,')
    assert csv[-1] == f'"{bad}",,,,,,"{tags[-1].error}"'
    rows = json.loads(render_tags(tags, "json"))
    assert rows[1]["start"] == 1.5 and rows[1]["end"] == 3.5 and len(rows[1]["labels"]) == 2
    assert "\t1.50-3.50 s\t" in render_tags(tags, "table")


def test_exported_file_tags_like_the_repository_ensemble_from_anywhere(tagger: Tagger, tmp_path: Path) -> None:
    """One file, loadable weights-only, gives the same scores; `fsd tag --model` works in a folder without params."""
    path = tmp_path / "tagger.pt"
    export_ensemble(path, tagger.ensemble)
    payload = torch.load(path, weights_only=True)  # plain data and tensors only: no pickled code
    assert payload["format"] == "fsdlib-tagger" and payload["classes"] == CLASSES
    assert not any("bn" in k for k in payload["members"][0]["snapshots"][0])  # batch norms folded
    clips = tmp_path / "clips"
    clips.mkdir()
    write_tone(clips / "a.mp3", 1.2, freq=500.0)
    write_tone(clips / "b.wav", 0.7, freq=900.0)
    ours = tagger.scores(sorted(clips.iterdir()))
    loaded = load_tagger(path, device="cpu").scores(sorted(clips.iterdir()))
    assert np.allclose(loaded.to_numpy(), ours.to_numpy(), atol=1e-5)
    assert list(loaded.columns) == CLASSES and loaded.index.tolist() == [str(clips / "a.mp3"), str(clips / "b.wav")]
    wave = read_audio(clips / "b.wav")
    assert np.allclose(tagger.scores([wave, wave.astype(np.float32) / 32768.0]).to_numpy(),
                       ours.to_numpy()[[1, 1]], atol=1e-5)  # arrays, int16 or float, as files
    proc = subprocess.run([str(Path(sys.executable).parent / "fsd"), "tag", "--model", str(path), "clips",
                           "--format", "csv", "--device", "cpu", "--segment", "0.5"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert rows[0] == "file,start,end,rank,label,score,error" and len(rows) == 1 + 3 * (3 + 2)  # 3 + 2 windows


def test_exported_file_errors(tagger: Tagger, tmp_path: Path) -> None:
    path = tmp_path / "tagger.pt"
    export_ensemble(path, tagger.ensemble)
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(FsdError, match="format version 99"):
        load_tagger(tmp_path / "future.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(FsdError, match="not an fsdlib tagger file"):
        load_tagger(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(FsdError, match="not a loadable tagger file"):
        load_tagger(tmp_path / "junk.pt")
    with pytest.raises(FsdError, match="tagger file not found"):
        load_tagger(tmp_path / "missing.pt")


def test_model_file_refuses_other_weights(tagger: Tagger, tmp_path: Path) -> None:
    path = tmp_path / "tagger.pt"
    export_ensemble(path, tagger.ensemble)
    write_tone(tmp_path / "a.wav", 0.5)
    proc = subprocess.run([str(Path(sys.executable).parent / "fsd"), "tag", "--model", str(path), "a.wav",
                           "--weights", "fixed"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: --weights chooses")
