"""The ONNX tagger (fsdlib/onnx_export.py, fsdlib/onnx_tagger.py): the torch engine's scores for every member kind,
padded or not, clip by clip and in batches; the numpy mel front end; clear errors for damaged or foreign files; a
whole `fsd tag` process on an ONNX file that never imports torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
from test_batch_mates import CLASSES, _wave, member

from fsdlib.errors import FsdError
from fsdlib.export import LoadedEnsemble, export_ensemble
from fsdlib.features import LogMelExtractor
from fsdlib.logmel import MelSpectrogram, mel_basis
from fsdlib.onnx_export import export_onnx, external_data_path, sparse_bank
from fsdlib.onnx_tagger import ONNX_VERSION, dense_bank, load_onnx_tagger
from fsdlib.settings import InferenceConfig, LogMelConfig
from fsdlib.tagger import Tagger
from fsdlib.tagger_file import open_tagger_file

ATOL = 1e-4  # onnxruntime's kernels against torch's, float32 through a whole network
# lengths in samples: shorter than an EnvNet's minimum input, odd lengths, and three of one length (one batch)
LENGTHS = (300, 20_001, 30_000, 44_100, 44_100, 44_100, 90_001)


def _ensemble(*members) -> LoadedEnsemble:
    return LoadedEnsemble(tuple(CLASSES), LogMelConfig(), InferenceConfig(), tuple(members))


KINDS = {  # each member kind; the ensemble holds a loop-padded ResNet and a padded EnvNet, weighted
    "resnet_sigmoid": lambda: (member("A", []),),
    "resnet_softmax_pads": lambda: (member("B", [3, 9], "softmax"),),
    "envnet": lambda: (member("E", [], family="envnet"),),
    "ensemble": lambda: (member("A", [0, 6], pad_mode="loop"), replace(member("B", [3], "softmax"), weight=3.0),
                         member("E", [0, 2000], family="envnet")),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """Each kind's ensemble and its ONNX file (the ensemble's with its weights beside it, as the export stage
    writes it), exported once for the module."""
    cache: dict[str, tuple[LoadedEnsemble, Path]] = {}

    def get(kind: str) -> tuple[LoadedEnsemble, Path]:
        if kind not in cache:
            ensemble = _ensemble(*KINDS[kind]())
            path = tmp_path_factory.mktemp(kind) / "tagger.onnx"
            export_onnx(path, ensemble, external=kind == "ensemble")
            cache[kind] = ensemble, path
        return cache[kind]

    return get


@pytest.fixture(scope="module")
def waves() -> list[np.ndarray]:
    return [_wave(n / 44_100, seed)[:n] for seed, n in enumerate(LENGTHS)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_onnx_scores_equal_torch_clip_by_clip_and_batched(kind: str, waves: list[np.ndarray], exported) -> None:
    """Each clip scored alone by the torch engine; onnxruntime scores the same clips alone (threads=1) and all at
    once (equal lengths in one batch, the rest concurrently): the same probabilities within 1e-4."""
    ensemble, path = exported(kind)
    torch_tagger = Tagger(ensemble, "cpu")
    expected = np.stack([torch_tagger.predict([w])[0] for w in waves])
    assert expected.std(axis=0).max() > 1e-3, "clips must score differently for the comparison to mean anything"
    single = load_onnx_tagger(path, threads=1)
    np.testing.assert_allclose(np.stack([single.predict([w])[0] for w in waves]), expected, atol=ATOL)
    np.testing.assert_allclose(load_onnx_tagger(path).predict(waves), expected, atol=ATOL)
    np.testing.assert_allclose(single.predict(waves[3:6]), expected[3:6], atol=ATOL)  # one batch of three


def test_external_weights_and_metadata(exported, tmp_path: Path) -> None:
    """The weights beside the graph score as the same graph with them inside; the metadata names every member's
    kind, pads and inputs, and the mel bank is stored exactly in a few KB."""
    ensemble, external = exported("ensemble")
    data = external_data_path(external)
    assert data.is_file() and external.stat().st_size < 2 * data.stat().st_size
    inline = tmp_path / "inline.onnx"
    size = export_onnx(inline, ensemble)
    assert size == inline.stat().st_size and not external_data_path(inline).exists()
    clip = [_wave(0.8, 3)]
    np.testing.assert_allclose(load_onnx_tagger(external).predict(clip), load_onnx_tagger(inline).predict(clip),
                               atol=1e-6)
    meta = json.loads({p.key: p.value for p in onnx.load(inline, load_external_data=False).metadata_props}["fsdlib"])
    assert [(m["name"], m["kind"], m["pads"]) for m in meta["members"]] == [
        ("A", "logmel", [0, 6]), ("B", "logmel", [3]), ("E", "wave", [0, 2000])]
    assert meta["classes"] == CLASSES and len(meta["mel_basis"]["values"]) < 40_000
    (tmp_path / "inline.onnx.data").write_bytes(b"stale")
    export_onnx(inline, ensemble)  # exported again without external weights: stale weights beside it go
    assert not external_data_path(inline).exists()


def test_exports_are_reproducible(exported, tmp_path: Path) -> None:
    """The same ensemble exported again, into another folder: the same bytes (no temporary names or source paths
    inside), so DVC sees an unchanged output."""
    ensemble, first = exported("ensemble")
    again = tmp_path / "tagger.onnx"
    export_onnx(again, ensemble, external=True)
    for a, b in ((first, again), (external_data_path(first), external_data_path(again))):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert b"onnx_export.py" not in again.read_bytes()
    export_ensemble(tmp_path / "one.pt", ensemble)
    export_ensemble(tmp_path / "two.pt", ensemble)
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()


def test_mel_bank_round_trip_is_exact() -> None:
    basis = mel_basis(LogMelConfig())
    assert np.array_equal(dense_bank(sparse_bank(basis)), basis)


@pytest.mark.parametrize("seconds", [0.01, 0.029, 0.7, 3.1])
def test_numpy_mel_equals_the_feature_kernel(seconds: float) -> None:
    """The tagger's numpy mel spectrogram = the feature stores' fused kernel, int16 and float input, any length;
    several clips on threads = one by one."""
    rng = np.random.default_rng(1)
    wave = (rng.normal(0, 3000, int(seconds * 44_100)) * np.linspace(0.01, 1, int(seconds * 44_100))).astype(np.int16)
    cfg = LogMelConfig()
    mel = MelSpectrogram(cfg, chunk_frames=37)
    ours, kernel = mel(wave), LogMelExtractor(cfg, threads=1)([wave])[0]
    assert ours.shape == kernel.shape == (cfg.n_frames(len(wave)), cfg.n_mels)
    np.testing.assert_allclose(ours, kernel, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(mel(wave.astype(np.float32) / 32768.0), kernel, rtol=1e-5, atol=1e-12)
    many = mel.many([wave, wave[: len(wave) // 2], wave], threads=2)
    assert all(np.array_equal(a, b) for a, b in zip(many, [ours, mel(wave[: len(wave) // 2]), ours], strict=True))


def _edited(source: Path, dest: Path, edit) -> Path:
    model = onnx.load(source)
    edit(model)
    onnx.save(model, dest)
    return dest


def test_damaged_or_foreign_files_get_one_clear_error(exported, tmp_path: Path) -> None:
    good = shutil.copy(exported("resnet_sigmoid")[1], tmp_path / "good.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx file at all")
    (tmp_path / "cut.onnx").write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    def drop_metadata(model: onnx.ModelProto) -> None:
        del model.metadata_props[:]

    def set_version(model: onnx.ModelProto) -> None:
        (entry,) = model.metadata_props
        entry.value = json.dumps(json.loads(entry.value) | {"version": ONNX_VERSION + 1})

    def rename_input(model: onnx.ModelProto) -> None:
        entry = model.metadata_props[0]
        meta = json.loads(entry.value)
        meta["members"][0]["inputs"] = ["elsewhere"]
        entry.value = json.dumps(meta)

    cases = {
        tmp_path / "junk.onnx": "not a loadable ONNX file",
        tmp_path / "cut.onnx": "not a loadable ONNX file",
        tmp_path / "missing.onnx": "tagger file not found",
        _edited(good, tmp_path / "foreign.onnx", drop_metadata): "without fsdlib tagger metadata",
        _edited(good, tmp_path / "newer.onnx", set_version): f"version {ONNX_VERSION + 1}",
        _edited(good, tmp_path / "mismatch.onnx", rename_input): "are not its members'",
    }
    for path, message in cases.items():
        with pytest.raises(FsdError, match=message) as caught:
            open_tagger_file(path)
        assert str(path) in str(caught.value), caught.value
    external = shutil.copy(exported("ensemble")[1], tmp_path / "external.onnx")  # its weights' file not beside it
    with pytest.raises(FsdError, match="not a loadable ONNX file"):
        open_tagger_file(external)
    with pytest.raises(FsdError, match="runs on the CPU"):
        open_tagger_file(good, "cuda")


def test_fsd_tag_on_an_onnx_file_never_imports_torch(exported, tmp_path: Path) -> None:
    """From a folder outside the repository: WAV, FLAC, OGG and MP3 files and `--segment` windows, an ensemble with
    an EnvNet, and not one torch import in the process."""
    graph = exported("ensemble")[1]
    for source in (graph, external_data_path(graph)):
        shutil.copy(source, tmp_path / source.name)
    clips = tmp_path / "clips"
    clips.mkdir()
    subtypes = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}
    for i, (suffix, subtype) in enumerate(subtypes.items()):
        sf.write(clips / f"c{i}.{suffix}", _wave(1.5 + i, 10 + i), 44_100, subtype=subtype)
    code = ("import sys; from stages.cli import app\n"
            "for args in (['clips'], ['clips', '--segment', '1.0', '--hop', '0.5']):\n"
            "    try:\n        app(['tag', '--model', 'tagger.onnx', '--format', 'csv', '--top-k', '2', *args])\n"
            "    except SystemExit as e:\n        assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('no torch')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "no torch"
    whole = [line for line in lines if line.startswith('"clips/') and line.count(",") == 4]
    windows = [line for line in lines if line.startswith('"clips/') and line.count(",") == 6]
    assert sorted({line.split(",")[0] for line in whole}) == [f'"clips/c{i}.{s}"' for i, s in enumerate(subtypes)]
    assert len(whole) == 4 * 2 and len(windows) > len(whole)  # two labels per file, more per window
