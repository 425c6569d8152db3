"""A clip's scores do not depend on its batch-mates (docs/method.md §8): alone, grouped with longer clips, or in a
folder of more than one chunk, through predict_clips, the Python API and `fsd tag` on torch and on onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from fsdlib.audio import SAMPLE_RATE
from fsdlib.export import LoadedEnsemble, LoadedMember, export_ensemble
from fsdlib.inference import length_groups, predict_clips
from fsdlib.models import build_network
from fsdlib.onnx_export import export_onnx
from fsdlib.onnx_tagger import load_onnx_tagger
from fsdlib.settings import InferenceConfig, LogMelConfig
from fsdlib.spec import model_spec
from fsdlib.tagger import load_tagger
from stages.cli import app

ATOL = 1e-5
CLASSES = ["Bark", "Meow", "Chirp", "Hum"]
ARCH = {"layers": [1, 2, 1, 1], "widths": [4, 8, 8, 16], "hidden": 16}
CHUNK = 128  # fsdlib.tags.TaggerBase.tag_files' default chunk of files


def _wave(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * rng.uniform(200, 4000) * t) * rng.uniform(2000, 9000)
    return (tone + rng.normal(0, 800, len(t))).astype(np.int16)


def member(name: str, pads: list[int], activation: str = "sigmoid", pad_mode: str = "zero", family: str = "resnet",
           ) -> LoadedMember:
    """A one-network member whose batch norms hold the statistics of real inputs, as after training: with random
    statistics an EnvNet's features are ~1e-3 and every clip scores alike, so batch-mates could not show."""
    arch = ARCH if family == "resnet" else {"width": 0.125, "hidden": 16}
    spec = model_spec({"family": family, "activation": activation, "pad_mode": pad_mode, "tta_pads": pads,
                       "arch": arch}, name)
    torch.manual_seed(len(name) + len(pads))
    net = build_network(spec, len(CLASSES))
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # the running statistics become the plain average over the batch
    if family == "resnet":
        inputs = torch.randn(8, 1, 128, 60)
    else:
        inputs = torch.as_tensor(np.stack([_wave(0.6, 50 + i)[:25_000] for i in range(8)]) / 32768.0).float()
    with torch.no_grad():
        net.train()(inputs)
    return LoadedMember(name, spec, (net.eval().for_inference(),), 1.0, tuple(pads))


@pytest.mark.parametrize("family", ["resnet", "envnet"])
@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_predict_clips_scores_a_clip_as_it_scores_alone(family: str, activation: str) -> None:
    """One clip, alone and grouped with three longer clips (one batch: they are within the tolerance)."""
    net = member("M", [0, 5] if family == "resnet" else [0, 3000], activation, family=family).models[0]
    kind = "logmel" if family == "resnet" else "wave"
    rng = np.random.default_rng(1)
    if kind == "logmel":
        clips = [(10.0 ** rng.uniform(-3, 0, (n, 128))).astype(np.float32) for n in (40, 44, 46, 47)]
        pads = (0, 5)
    else:
        # shorter than the network's minimum input (20,570 samples) alone, so centred in it; not so in the group
        clips = [_wave(s, i) for i, s in enumerate((0.30, 0.33, 0.34, 0.35))]
        pads = (0, 3000)
    cfg = InferenceConfig()
    sizes = [len(c) + 2 * max(pads) for c in clips]
    assert len(length_groups(sizes, cfg, 128 if kind == "logmel" else 1)) == 1  # all four share one batch
    alone = predict_clips(net, clips[:1], kind, activation, pads, cfg=cfg, device="cpu", pad_mode="zero")[0]
    grouped = predict_clips(net, clips, kind, activation, pads, cfg=cfg, device="cpu", pad_mode="zero")
    np.testing.assert_allclose(grouped[0], alone, atol=ATOL)
    # the group padding would matter if the network were not told the lengths (and, for the EnvNet, the centring)
    padded = [np.pad(clips[0], ((0, len(clips[3]) - len(clips[0])),) + ((0, 0),) * (clips[0].ndim - 1))]
    shifted = predict_clips(net, padded, kind, activation, pads, cfg=cfg, device="cpu", pad_mode="zero")[0]
    assert np.abs(shifted - alone).max() > 100 * ATOL


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """A target clip, three slightly longer clips, and a folder of more than one chunk holding all of them."""
    root = tmp_path_factory.mktemp("batch_mates")
    clips = root / "clips"
    clips.mkdir()
    target = clips / "z_target.wav"  # sorts last: it lands in the folder's second chunk
    sf.write(target, _wave(0.30, 0), SAMPLE_RATE, subtype="PCM_16")
    longer = []
    for i, seconds in enumerate((0.32, 0.33, 0.35)):
        longer.append(clips / f"z_longer_{i}.wav")
        sf.write(longer[-1], _wave(seconds, 10 + i), SAMPLE_RATE, subtype="PCM_16")
    for i in range(CHUNK):
        sf.write(clips / f"a_filler_{i:03d}.wav", _wave(0.2 + 0.002 * i, 100 + i), SAMPLE_RATE, subtype="PCM_16")
    return root, target, longer


def _export(path: Path, *members) -> Path:
    """An exported file of the members: ONNX for a `.onnx` path, the torch file otherwise."""
    ensemble = LoadedEnsemble(tuple(CLASSES), LogMelConfig(), InferenceConfig(), tuple(members))
    export_onnx(path, ensemble) if path.suffix == ".onnx" else export_ensemble(path, ensemble)
    return path


def _tag_scores(model: Path, paths: list[Path], target: Path) -> np.ndarray:
    """The target's score of every class as `fsd tag --format json` prints it."""
    result = CliRunner().invoke(app, ["tag", "--model", str(model), "--format", "json",
                                      "--top-k", str(len(CLASSES)), *map(str, paths)])
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads(result.stdout) if Path(r["file"]).name == target.name]
    scores = {label["label"]: label["score"] for label in row["labels"]}
    return np.array([scores[c] for c in CLASSES])


def test_python_api_and_fsd_tag_score_a_file_as_alone(folder: tuple[Path, Path, list[Path]]) -> None:
    """Torch (a ResNet with TTA pads and loop padding, and an EnvNet) and onnxruntime (the same ensemble's ONNX
    graph): alone, with three longer files, and in a folder of more than one chunk, the same scores within 1e-5."""
    root, target, longer = folder
    both = _export(root / "both.pt", member("A", [0, 6], pad_mode="loop"), member("E", [0, 2000], family="envnet"))
    api = load_tagger(both, "cpu")
    alone = api.scores([target]).to_numpy()[0]
    np.testing.assert_allclose(api.scores([target, *longer]).to_numpy()[0], alone, atol=ATOL)
    tags = {t.path: dict(t.labels) for t in api.tag_files(sorted(target.parent.iterdir()), top_k=len(CLASSES))}
    np.testing.assert_allclose([tags[target][c] for c in CLASSES], alone, atol=ATOL)
    np.testing.assert_allclose(_tag_scores(both, [target], target), alone, atol=ATOL)
    np.testing.assert_allclose(_tag_scores(both, [target.parent], target), alone, atol=ATOL)

    graph = _export(root / "both.onnx", member("A", [0, 6], pad_mode="loop"), member("E", [0, 2000], family="envnet"))
    onnx_alone = load_onnx_tagger(graph).scores([target]).to_numpy()[0]
    np.testing.assert_allclose(onnx_alone, alone, atol=ATOL)
    np.testing.assert_allclose(load_onnx_tagger(graph).scores([target, *longer]).to_numpy()[0], alone, atol=ATOL)
    np.testing.assert_allclose(_tag_scores(graph, [target, *longer], target), alone, atol=ATOL)
    np.testing.assert_allclose(_tag_scores(graph, [target.parent], target), alone, atol=ATOL)
