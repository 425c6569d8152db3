"""The numpy engine (fsdlib/lite.py): the weights-only file read without torch, the numpy mel spectrogram and
network, and the same probabilities as the torch engine; a process that tags with it never imports torch."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fsdlib.errors import FsdError
from fsdlib.export import LoadedEnsemble, LoadedMember, export_ensemble
from fsdlib.features import LogMelExtractor
from fsdlib.inference import InferenceConfig
from fsdlib.lite import NumpyResNet, load_numpy_tagger, open_tagger_file
from fsdlib.logmel import LogMelConfig, MelSpectrogram
from fsdlib.ptfile import read_weights_file
from fsdlib.spec import ModelSpec
from fsdlib.tagger import Tagger, load_tagger

CLASSES = ["Bark", "Meow", "Chirp", "Hum"]
ARCH = {"layers": [1, 2, 1, 1], "widths": [4, 8, 8, 16], "hidden": 16}


def trained_like(spec: ModelSpec, seed: int) -> torch.nn.Module:
    """The spec's network with random weights and batch-norm statistics (so folding matters), folded."""
    torch.manual_seed(seed)
    model = spec.build(len(CLASSES)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.for_inference()


def member(name: str, pads: list[int], activation: str = "sigmoid", pad_mode: str = "zero", n: int = 1,
           family: str = "resnet") -> LoadedMember:
    arch = ARCH if family == "resnet" else {"width": 0.125, "hidden": 16}
    spec = ModelSpec.from_params({"family": family, "activation": activation, "pad_mode": pad_mode, "tta_pads": pads,
                                  "arch": arch}, name)
    models = tuple(trained_like(spec, seed) for seed in range(n))
    return LoadedMember(name, spec, models, 1.0, tuple(pads))


def test_weights_file_reads_like_torch_load(tmp_path: Path) -> None:
    """Every dtype, a non-contiguous (channels-last) and a sliced tensor, nesting: the values torch.load gives."""
    conv = torch.randn(5, 3, 3, 3).to(memory_format=torch.channels_last)
    data = {"a": [1, 2.5, "x", None, True], "n": OrderedDict(w=torch.randn(4, 7)), "conv": conv,
            "slice": torch.arange(20, dtype=torch.int64)[5:15:2], "half": torch.randn(3).half(),
            "flags": torch.tensor([True, False]), "scalar": torch.tensor(3.5, dtype=torch.float64),
            "shared": (lambda t: [t, t[1:]])(torch.randn(6))}
    torch.save(data, tmp_path / "w.pt")
    ours, theirs = read_weights_file(tmp_path / "w.pt"), torch.load(tmp_path / "w.pt", weights_only=True)
    assert ours["a"] == theirs["a"]
    for key in ("conv", "slice", "half", "flags", "scalar"):
        assert ours[key].dtype == theirs[key].numpy().dtype and np.array_equal(ours[key], theirs[key].numpy()), key
    assert np.array_equal(ours["n"]["w"], theirs["n"]["w"].numpy())
    assert np.array_equal(ours["shared"][1], theirs["shared"][1].numpy())


def test_weights_file_refuses_code_and_junk(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled class: code, not data
    with pytest.raises(FsdError, match="not a loadable tagger file"):
        read_weights_file(tmp_path / "module.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(FsdError, match="not a loadable tagger file"):
        read_weights_file(tmp_path / "junk.pt")


@pytest.mark.parametrize("seconds", [0.01, 0.029, 0.7, 3.1])
def test_numpy_mel_equals_the_feature_kernel(seconds: float) -> None:
    """The tagger's numpy mel spectrogram = the feature stores' fused kernel, int16 and float input, any length."""
    rng = np.random.default_rng(1)
    wave = (rng.normal(0, 3000, int(seconds * 44_100)) * np.linspace(0.01, 1, int(seconds * 44_100))).astype(np.int16)
    cfg = LogMelConfig()
    ours, kernel = MelSpectrogram(cfg)(wave), LogMelExtractor(cfg, threads=1)([wave])[0]
    assert ours.shape == kernel.shape == (cfg.n_frames(len(wave)), cfg.n_mels)
    np.testing.assert_allclose(ours, kernel, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(MelSpectrogram(cfg)(wave.astype(np.float32) / 32768.0), kernel, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("shape", [(128, 37), (64, 5), (33, 1)])
def test_numpy_network_equals_torch(activation: str, shape: tuple[int, int]) -> None:
    """Folded ResNet (strided blocks, shortcuts, odd sizes, one frame): the torch network's probabilities."""
    m = member("A", [], activation)
    net = m.models[0]
    x = torch.randn(1, 1, *shape)
    expected = net.predict(x, activation)[0].numpy()
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    np.testing.assert_allclose(NumpyResNet(state, activation)(x[0].numpy()), expected, rtol=1e-4, atol=1e-6)


def test_numpy_tagger_equals_torch_tagger_clip_by_clip(tmp_path: Path) -> None:
    """Two members (one averaging two snapshots over pads 0 and 6 with loop padding), weighted: the torch engine's
    ensemble, each clip predicted on its own; files of any length and format through the same reading code."""
    members = (member("A", [0, 6], pad_mode="loop", n=2), replace(member("B", [], "softmax"), weight=3.0))
    ensemble = LoadedEnsemble(tuple(CLASSES), LogMelConfig(), InferenceConfig(), members)
    path = tmp_path / "tagger.pt"
    export_ensemble(path, ensemble)
    torch_tagger, numpy_tagger = load_tagger(path, "cpu"), load_numpy_tagger(path)
    rng = np.random.default_rng(0)
    waves = [(rng.normal(0, 2000, n)).astype(np.int16) for n in (300, 20_000, 44_100, 90_001)]
    expected = np.stack([torch_tagger.predict([w])[0] for w in waves])
    np.testing.assert_allclose(numpy_tagger.predict(waves), expected, atol=2e-5)
    sf.write(tmp_path / "a.flac", waves[2], 44_100, subtype="PCM_16")
    frame = numpy_tagger.scores([tmp_path / "a.flac", waves[2]])
    assert list(frame.columns) == CLASSES and np.allclose(frame.to_numpy(), expected[[2, 2]], atol=2e-5)


def test_engine_choice_and_refusals(tmp_path: Path) -> None:
    """auto: numpy for one network, torch for more; numpy refuses an EnvNet and a file without a mel bank."""
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    export_ensemble(one, LoadedEnsemble(tuple(CLASSES), LogMelConfig(), InferenceConfig(), (member("A", []),)))
    export_ensemble(two, LoadedEnsemble(tuple(CLASSES), LogMelConfig(), InferenceConfig(), (member("A", [], n=2),)))
    assert type(open_tagger_file(one)).__name__ == "NumpyTagger"
    assert isinstance(open_tagger_file(two), Tagger) and isinstance(open_tagger_file(one, "torch"), Tagger)
    assert type(open_tagger_file(two, "numpy")).__name__ == "NumpyTagger"
    wave = tmp_path / "env.pt"
    export_ensemble(wave, LoadedEnsemble(tuple(CLASSES), LogMelConfig(), InferenceConfig(),
                                         (member("E", [], family="envnet"),)))
    with pytest.raises(FsdError, match="envnet network"):
        open_tagger_file(wave, "numpy")
    assert isinstance(open_tagger_file(wave), Tagger)  # auto falls back to torch
    old = torch.load(one, weights_only=True)
    del old["mel_basis"]
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(FsdError, match="no mel filter bank"):
        open_tagger_file(tmp_path / "old.pt", "numpy")
    assert np.allclose(load_tagger(tmp_path / "old.pt").predict([np.ones(500, np.int16)]),
                       load_tagger(one).predict([np.ones(500, np.int16)]))  # older files: the bank from librosa
    with pytest.raises(FsdError, match="tagger file not found"):
        open_tagger_file(tmp_path / "missing.pt")
    with pytest.raises(FsdError, match="engine must be"):
        open_tagger_file(one, "onnx")


def test_fsd_tag_with_the_numpy_engine_never_imports_torch(tmp_path: Path) -> None:
    """The point of the engine: a whole `fsd tag` process on a one-network file runs without torch."""
    export_ensemble(tmp_path / "one.pt", LoadedEnsemble(tuple(CLASSES), LogMelConfig(), InferenceConfig(),
                                                        (member("A", []),)))
    sf.write(tmp_path / "a.wav", (np.sin(np.arange(30_000) / 9.0) * 9000).astype(np.int16), 44_100)
    code = ("import sys; from stages.cli import app\n"
            "try:\n    app(['tag', '--model', 'one.pt', 'a.wav', '--format', 'csv'])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('no torch')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "file,rank,label,score,error" and len(lines) == 1 + 3 + 1 and lines[-1] == "no torch"
