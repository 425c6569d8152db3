"""`fsd import`: class folders and CSVs (WAV, FLAC, OGG, MP3; single and multi-label; a noisy source) into a root
the pipeline reads; bad inputs give one line and exit 1 and never touch the source; the pipeline runs on an
imported root without a noisy part and without test labels."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from pipeline import make_repo, repro, run, tiny_params

from fsdlib.audio import SAMPLE_RATE, pcm16_data
from fsdlib.dataset import read_dataset
from fsdlib.errors import FsdError
from fsdlib.importer import clips_from_csv, clips_from_folders, make_plan, write_root
from fsdlib.paths import Paths

FREQS = {"Bark": 300.0, "Meow": 900.0, "Chirp": 2700.0}
FORMATS = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}


def tone(freq: float, seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A sine with a little noise, `channels` identical channels."""
    t = np.arange(int(seconds * sr)) / sr
    x = 0.4 * np.sin(2 * np.pi * freq * t) + 0.02 * np.random.default_rng(seed).standard_normal(t.size)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def write(path: Path, freq: float, fmt: str, sr: int = SAMPLE_RATE, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(freq, 0.6 + 0.1 * (seed % 4), sr, channels, seed), sr, subtype=FORMATS[fmt])
    return path


def class_tree(root: Path, per_class: int = 8) -> Path:
    """root/<class>/[sub/]<name>.<fmt>: every format, some at 22.05 or 48 kHz and in stereo, nested folders."""
    for c, (name, freq) in enumerate(FREQS.items()):
        for i in range(per_class):
            fmt = list(FORMATS)[i % 4]
            sr, channels = [(SAMPLE_RATE, 1), (22050, 2), (48000, 1), (SAMPLE_RATE, 2)][(i + c) % 4]
            folder = root / name / ("deeper" if i % 2 else "")
            write(folder / f"{name.lower()}_{i}.{fmt}", freq * (1 + 0.02 * i), fmt, sr, channels, seed=10 * c + i)
    return root


def tree_hash(root: Path) -> str:
    """sha256 over every file's relative path and bytes, and every folder's name: any change shows."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_class_folders_give_a_valid_root_with_multi_labels(tmp_path: Path) -> None:
    src = class_tree(tmp_path / "src")
    shutil.copy(src / "Bark" / "bark_0.wav", src / "Meow" / "bark_0.wav")  # the same clip in two class folders
    before = tree_hash(src)
    plan = make_plan(clips_from_folders(src), test_fraction=0.25, seed=0)
    table = write_root(plan, tmp_path / "root", progress=False)
    assert tree_hash(src) == before
    dataset = read_dataset(tmp_path / "root")  # the pipeline's own reader accepts it
    assert dataset.classes == ("Bark", "Chirp", "Meow")  # sorted
    assert len(dataset.curated) + len(dataset.test) == 3 * 8 and len(dataset.noisy) == 0
    names = {*dataset.curated.fnames, *dataset.test.fnames}
    assert {"bark_1.wav", "meow_2.wav", "chirp_3.wav"} <= names  # FLAC, OGG and MP3 sources became WAVs
    both = dataset.curated if "bark_0.wav" in dataset.curated.fnames else dataset.test
    row = both.labels[both.fnames.index("bark_0.wav")]
    assert row.tolist() == [1.0, 0.0, 1.0]  # Bark and Meow
    for path in (*dataset.curated.paths(), *dataset.test.paths()):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16"), path
        assert pcm16_data(path) is not None, path  # canonical: the pipeline reads it in place
    assert set(dataset.test.usage) <= {"Public", "Private"} and "Public" in dataset.test.usage
    assert table.loc["(all clips)", "curated clips"] == len(dataset.curated)
    assert table.loc["Meow", "curated clips"] + table.loc["Meow", "test clips"] == 9  # 8 own clips + bark_0


def test_converted_audio_keeps_frequency_and_level(tmp_path: Path) -> None:
    """An MP3 at 48 kHz in stereo arrives as 44.1 kHz mono with the tone's frequency and amplitude."""
    src = tmp_path / "src"
    write(src / "Chirp" / "a.mp3", 1000.0, "mp3", 48000, 2)
    write(src / "Bark" / "b.wav", 300.0, "wav")
    write(src / "Bark" / "c.flac", 310.0, "flac")
    write(src / "Chirp" / "d.ogg", 990.0, "ogg")
    plan = make_plan(clips_from_folders(src), test_fraction=0.5, seed=0)
    write_root(plan, tmp_path / "root", progress=False)
    path = next((tmp_path / "root").rglob("a.wav"))
    wave, sr = sf.read(path)
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    assert sr == SAMPLE_RATE
    assert abs(np.argmax(spectrum) * sr / wave.size - 1000.0) < 5.0
    rms = np.sqrt(np.mean(wave[4000:-4000] ** 2))
    assert abs(rms - np.sqrt(0.4**2 / 2 + 0.02**2)) < 0.01  # 0.4 sine + 0.02 noise, through MP3 and the downmix


def test_csv_multi_label_split_column_and_noisy_source(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    rows = []
    for i in range(12):
        names = list(FREQS)[i % 3:i % 3 + 1 + (i % 2)]
        fmt = list(FORMATS)[i % 4]
        write(audio / f"clip{i}.{fmt}", FREQS[names[0]], fmt, seed=i)
        rows.append({"file": f"clip{i}.{fmt}", "tags": ";".join(names), "part": "test" if i >= 9 else "train"})
    pd.DataFrame(rows).to_csv(tmp_path / "meta.csv", index=False)
    noisy_audio = tmp_path / "web"
    for i in range(6):
        write(noisy_audio / f"web{i}.flac", list(FREQS.values())[i % 3], "flac", seed=50 + i)
    pd.DataFrame({"file": [f"web{i}.flac" for i in range(6)], "tags": [list(FREQS)[i % 3] for i in range(6)]}).to_csv(
        tmp_path / "web.csv", index=False)
    before = (tree_hash(audio), tree_hash(noisy_audio), (tmp_path / "meta.csv").read_bytes())
    curated = clips_from_csv(tmp_path / "meta.csv", audio, "file", "tags", ";", "part")
    noisy = clips_from_csv(tmp_path / "web.csv", noisy_audio, "file", "tags", ";")
    plan = make_plan(curated, noisy, classes=["Meow", "Bark", "Chirp"])
    write_root(plan, tmp_path / "out" / "root", progress=False)
    assert (tree_hash(audio), tree_hash(noisy_audio), (tmp_path / "meta.csv").read_bytes()) == before
    dataset = read_dataset(tmp_path / "out" / "root")
    assert dataset.classes == ("Meow", "Bark", "Chirp")  # the given order
    assert dataset.test.fnames == ("clip9.wav", "clip10.wav", "clip11.wav")  # by the split column
    assert len(dataset.curated) == 9 and len(dataset.noisy) == 6
    clip1 = dataset.curated.labels[dataset.curated.fnames.index("clip1.wav")]
    assert clip1.tolist() == [1.0, 0.0, 1.0]  # "Meow;Chirp"


def _cli(args: list[str], cwd: Path) -> tuple[int, str]:
    proc = run(["fsd", "import", *args], cwd, check=False)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("case", ["unknown column", "missing file", "empty labels", "duplicate name",
                                  "label not in classes", "destination not empty", "unreadable audio",
                                  "same name, two splits"])
def test_bad_input_one_line_exit_1_source_untouched(tmp_path: Path, case: str) -> None:
    src = tmp_path / "src"
    audio = src / "audio"
    for i in range(4):
        write(audio / f"a{i}.wav", 400.0 + 100 * i, "wav", seed=i)
    rows = [{"fname": f"a{i}.wav", "labels": ["Bark", "Meow"][i % 2], "split": "train"} for i in range(4)]
    args = [str(src / "meta.csv"), str(tmp_path / "out"), "--split-column", "split", "--audio-dir", str(audio)]
    expect = {"unknown column": "missing column(s) tags", "missing file": "row 3", "empty labels": "empty labels",
              "duplicate name": "duplicate name 'a0.wav'", "label not in classes": "not in the given class list",
              "destination not empty": "not an empty folder", "unreadable audio": "unreadable FLAC",
              "same name, two splits": "listed as train"}[case]
    if case == "unknown column":
        args += ["--label-column", "tags"]
    elif case == "missing file":
        rows[1]["fname"] = "gone.wav"
    elif case == "empty labels":
        rows[2]["labels"] = " , "
    elif case == "duplicate name":
        write(audio / "a0.flac", 999.0, "flac")
        rows.append({"fname": "a0.flac", "labels": "Bark", "split": "train"})
    elif case == "label not in classes":
        args += ["--classes", "Bark"]
    elif case == "destination not empty":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "keep.txt").write_text("mine")
    elif case == "unreadable audio":
        (audio / "bad.flac").write_bytes(b"fLaC" + bytes(200))
        rows.append({"fname": "bad.flac", "labels": "Bark", "split": "test"})
    elif case == "same name, two splits":
        rows.append({"fname": "a0.wav", "labels": "Meow", "split": "test"})
    if case != "unreadable audio":
        rows.append({"fname": "a3.wav", "labels": "Meow", "split": "test"} if case != "same name, two splits"
                    else {"fname": "a2.wav", "labels": "Meow", "split": "train"})
        rows[3]["split"] = "test"
    pd.DataFrame(rows).to_csv(src / "meta.csv", index=False)
    before = tree_hash(src)
    code, err = _cli(args, tmp_path)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1, err
    assert len(lines) == 1 and expect in lines[0], err
    assert "Traceback" not in err
    assert tree_hash(src) == before
    assert case == "destination not empty" or not (tmp_path / "out").exists()
    if case == "destination not empty":
        assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_plan_needs_both_parts() -> None:
    with pytest.raises(FsdError, match="too few to hold out a test part"):
        make_plan([], test_fraction=0.2)


@pytest.mark.slow
def test_pipeline_runs_on_an_imported_root_without_noisy_part_or_test_labels(tmp_path: Path) -> None:
    """Import class folders with unlabelled test audio and no noisy source, then `dvc repro` to the end: CV metrics
    for every model, no test metrics, a submission for every test clip, and `fsd tag` on an imported clip."""
    src = class_tree(tmp_path / "src", per_class=10)
    for i in range(6):
        write(tmp_path / "unlabelled" / f"new_{i}.ogg", list(FREQS.values())[i % 3], "ogg", seed=90 + i)
    repo = make_repo(tmp_path / "repo")
    root = tmp_path / "own"
    run(["fsd", "import", str(src), str(root), "--test-audio", str(tmp_path / "unlabelled")], repo)
    params = tiny_params()
    params["data"]["root"] = str(root)
    # one model per kind of stage (from scratch, from pre, student) keeps this run short; the full set runs in
    # tests/test_pipeline.py
    params["stage_models"] = {"train": ["A", "pre"], "train_from_pre": ["D"], "train_student": ["B"],
                              "predict": ["A", "B", "D"]}
    params["models"] = {m: params["models"][m] for m in ("A", "pre", "D", "B")}
    params["ensemble"]["weights"] = {"A": 3, "B": 4, "D": 1}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = repro(repo)
    assert "synth" in ran and "teacher" in ran and "ensemble" in ran
    metrics = json.loads((repo / "metrics" / "metrics.json").read_text())
    assert "test" not in metrics
    assert set(metrics["cv"]) == {"A", "B", "D", "ensemble_fixed", "ensemble_fitted"}
    assert all(0.0 < v <= 1.0 for v in metrics["cv"].values())
    submission = pd.read_csv(repo / "data" / "submission.csv")
    assert sorted(submission["fname"]) == [f"new_{i}.wav" for i in range(6)]
    assert list(submission.columns[1:]) == ["Bark", "Chirp", "Meow"]
    with np.load(Paths(repo).teacher) as teacher:
        assert teacher["preds"].shape[1] == 0  # no noisy clips to teach
    tagged = run(["fsd", "tag", str(root / "test" / "new_0.wav"), "--format", "csv"], repo)
    assert "new_0.wav" in tagged.stdout
