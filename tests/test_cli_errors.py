"""The error messages of `fsd import` and `fsd tag`: each bad input fails with exit 1 and one `error:` line that
names the problem and the file or option at fault (the command is run in-process through click's CliRunner)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_wav

from fsdlib.errors import FsdError
from fsdlib.importer import clips_from_folders
from stages.cli import app


@pytest.fixture(autouse=True)
def _keep_root_logging() -> Iterator[None]:
    """A stage calls logging.basicConfig(force=True) on the runner's stderr: give the root logger back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def fsd(*args: str | Path) -> str:
    """Run `fsd ARGS`, which must fail as a stage fails on bad input (exit 1, no traceback, one `error:` line on
    stderr); that line."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception (also exit 1)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def fsd_import(source: Path, dest: Path, *options: str | Path) -> str:
    """`fsd import SOURCE DEST OPTIONS`, which must fail and write nothing at DEST; its error line."""
    line = fsd("import", source, dest, *options)
    assert not dest.exists()
    return line


def class_folders(root: Path, classes: dict[str, list[str]]) -> Path:
    """root/<class>/<name> as short WAVs."""
    for i, (label, names) in enumerate(classes.items()):
        for j, name in enumerate(names):
            write_wav(root / label / name, seconds=0.05, seed=10 * i + j)
    return root


def labelled_csv(folder: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = ("fname", "labels")) -> Path:
    """folder/meta.csv of `rows`, and a short WAV for every fname in it."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        write_wav(folder / row["fname"], seconds=0.05, seed=i)
    pd.DataFrame(rows, columns=list(columns)).to_csv(folder / "meta.csv", index=False)
    return folder / "meta.csv"


TWO_CLASSES = {"Bark": ["b0.wav", "b1.wav"], "Meow": ["m0.wav", "m1.wav"]}


# ---- fsd import: class folders


def test_class_folder_root_not_found(tmp_path: Path) -> None:
    """"class folder root not found" is the library's (clips_from_folders): `fsd import` sends a path that is no
    folder to the CSV reader or to "source not found" (test_source_not_found), so the CLI cannot reach it."""
    with pytest.raises(FsdError, match="class folder root not found") as err:
        clips_from_folders(tmp_path / "missing")
    assert err.value.path == tmp_path / "missing"


def test_no_class_folders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_wav(src / "loose.wav", seconds=0.05)  # audio, but not in a class folder
    (src / ".hidden").mkdir()  # hidden folders are not classes
    line = fsd_import(src, tmp_path / "out")
    assert "no class folders" in line and str(src) in line, line


def test_empty_class_folder(tmp_path: Path) -> None:
    src = class_folders(tmp_path / "src", TWO_CLASSES)
    (src / "Chirp").mkdir()
    (src / "Chirp" / "notes.txt").write_text("not audio")
    line = fsd_import(src, tmp_path / "out")
    assert "class folder holds no audio files" in line and str(src / "Chirp") in line, line


def test_destination_holds_a_source_file(tmp_path: Path) -> None:
    """The destination is the source folder, spelled through a missing folder so that it does not "exist" (an
    existing, non-empty one is refused earlier, as "not an empty folder")."""
    src = class_folders(tmp_path / "src", TWO_CLASSES)
    dest = tmp_path / "nowhere" / ".." / "src"
    line = fsd("import", src, dest)
    assert "destination holds a source file" in line and str(dest) in line and str(src / "Bark") in line, line
    assert sorted(p.name for p in src.iterdir()) == ["Bark", "Meow"]  # nothing written into the sources


@pytest.mark.parametrize("fraction", ["0", "1", "-0.2", "1.5"])
def test_invalid_test_fraction(tmp_path: Path, fraction: str) -> None:
    src = class_folders(tmp_path / "src", TWO_CLASSES)
    line = fsd_import(src, tmp_path / "out", "--test-fraction", fraction)
    assert "test fraction must be between 0 and 1" in line and f"got {float(fraction)}" in line, line


# ---- fsd import: CSV


def test_invalid_split_value(tmp_path: Path) -> None:
    csv = labelled_csv(tmp_path / "src", [{"fname": "a.wav", "labels": "Bark", "split": "train"},
                                          {"fname": "b.wav", "labels": "Meow", "split": "validation"}],
                       ("fname", "labels", "split"))
    line = fsd_import(csv, tmp_path / "out", "--split-column", "split")
    assert "split must be one of train, test" in line and "'validation'" in line and f"{csv} row 3" in line, line


def test_empty_separator(tmp_path: Path) -> None:
    csv = labelled_csv(tmp_path / "src", [{"fname": "a.wav", "labels": "Bark"}, {"fname": "b.wav", "labels": "Meow"}])
    line = fsd_import(csv, tmp_path / "out", "--separator", "")
    assert "label separator must not be empty" in line and str(csv) in line, line


def test_no_rows(tmp_path: Path) -> None:
    csv = labelled_csv(tmp_path / "src", [])  # the header only
    line = fsd_import(csv, tmp_path / "out")
    assert line == f"error: {csv}: no rows"


# ---- fsd import: --classes


def test_bad_classes(tmp_path: Path) -> None:
    src = class_folders(tmp_path / "src", TWO_CLASSES)
    line = fsd_import(src, tmp_path / "out", "--classes", "Bark,,Meow")
    assert "class name ''" in line and "must be non-empty" in line, line


def test_duplicate_classes(tmp_path: Path) -> None:
    src = class_folders(tmp_path / "src", TWO_CLASSES)
    line = fsd_import(src, tmp_path / "out", "--classes", "Bark, Meow,Bark")
    assert "the given class list repeats a class" in line and "Bark, Meow, Bark" in line, line


# ---- fsd import: sources and parts


@pytest.mark.parametrize("which", ["source", "--noisy"])
def test_source_not_found(tmp_path: Path, which: str) -> None:
    src = class_folders(tmp_path / "src", TWO_CLASSES)
    missing = tmp_path / "missing"
    args = [missing] if which == "source" else [src, "--noisy", missing]
    line = fsd_import(args[0], tmp_path / "out", *args[1:])
    assert "source not found" in line and str(missing) in line, line


@pytest.mark.parametrize("split, counts", [("train", "2 training and 0 test"), ("test", "0 training and 2 test")],
                         ids=["no-test-clips", "no-training-clips"])
def test_empty_part(tmp_path: Path, split: str, counts: str) -> None:
    csv = labelled_csv(tmp_path / "src", [{"fname": "a.wav", "labels": "Bark", "split": split},
                                          {"fname": "b.wav", "labels": "Meow", "split": split}],
                       ("fname", "labels", "split"))
    line = fsd_import(csv, tmp_path / "out", "--split-column", "split")
    assert f"the split leaves {counts} clips" in line and "both must be non-empty" in line, line


def test_duplicate_names_across_parts(tmp_path: Path) -> None:
    src = class_folders(tmp_path / "src", TWO_CLASSES)
    noisy = class_folders(tmp_path / "web", {"Meow": ["b0.wav", "web1.wav"]})  # b0.wav is a curated name too
    test = class_folders(tmp_path / "unlabelled", {"any": ["t0.wav"]})
    line = fsd_import(src, tmp_path / "out", "--noisy", noisy, "--test-audio", test)
    assert "duplicate name 'b0.wav' in the curated and noisy parts" in line and str(noisy / "Meow" / "b0.wav") in line


# ---- fsd tag


@pytest.fixture(scope="module")
def tagger_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported file of one tiny untrained ResNet (`fsd tag --model` opens it before it checks the windows)."""
    import torch

    from fsdlib.export import LoadedEnsemble, LoadedMember, export_ensemble
    from fsdlib.models import build_network
    from fsdlib.settings import InferenceConfig, LogMelConfig
    from fsdlib.spec import model_spec

    torch.manual_seed(0)
    spec = model_spec({"family": "resnet", "tta_pads": [],
                       "arch": {"layers": [1, 1, 1, 1], "widths": [4, 4, 8, 8], "hidden": 8}}, "T")
    model = build_network(spec, 2).eval().for_inference()
    path = tmp_path_factory.mktemp("tagger") / "tagger.pt"
    export_ensemble(path, LoadedEnsemble(("Bark", "Meow"), LogMelConfig(), InferenceConfig(),
                                         (LoadedMember("T", spec, (model,), 1.0, ()),)))
    return path


def test_tag_hop_without_segment(tmp_path: Path, tagger_file: Path) -> None:
    clip = write_wav(tmp_path / "a.wav", seconds=0.2)
    line = fsd("tag", "--model", tagger_file, "--device", "cpu", "--hop", "0.5", clip)
    assert "--hop needs --segment" in line, line


def test_tag_damaged_onnx_file(tmp_path: Path) -> None:
    clip = write_wav(tmp_path / "a.wav", seconds=0.2)
    (tmp_path / "tagger.onnx").write_bytes(b"\x08\x07garbage")
    line = fsd("tag", "--model", tmp_path / "tagger.onnx", clip)
    assert "not a loadable ONNX file" in line and "tagger.onnx" in line, line
