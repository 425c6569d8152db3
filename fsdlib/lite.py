"""The numpy engine: an exported tagger file of log-mel ResNets run without torch, for a fast start.

`import torch` alone takes 1.4-2 s on a 2-core machine, longer than tagging a file with the distilled network
(docs/method.md §13). This engine reads the exported file with fsdlib/ptfile.py and runs the folded networks
(batch norms already inside the convolutions' weights and biases) with numpy: 2-D convolutions as one matrix
product over sliding windows, max pooling, the residual blocks, global max pooling and the classifier head. Each
clip is one batch of its own at full length; TTA pads, snapshot averaging and ensemble weights are the torch
engine's (fsdlib/inference.py). tests/test_lite.py holds its probabilities to the torch engine's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fsdlib.clip_input import pad_clip, power_to_input, silence_floor
from fsdlib.ensemble import weighted_average
from fsdlib.errors import FsdError
from fsdlib.logmel import LogMelConfig, MelSpectrogram
from fsdlib.ptfile import read_weights_file
from fsdlib.spec import check_activation, check_choice, check_pad_mode
from fsdlib.tags import TaggerBase, check_tagger_file

ENGINES = ("auto", "numpy", "torch")


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """(C, H, W) -> (O, H', W'): a zero-padded 2-D convolution with bias (torch's Conv2d arithmetic)."""
    _, kh, kw = weight.shape[1:]
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    out = np.tensordot(weight, windows, axes=([1, 2, 3], [0, 3, 4]))  # (O, H', W')
    return out + bias[:, None, None]


def max_pool(x: np.ndarray, size: int = 3, stride: int = 2, pad: int = 1) -> np.ndarray:
    """(C, H, W) max pooling, padding with -inf (torch's MaxPool2d): the maximum of size x size strided slices."""
    height, width = (x.shape[1] + 2 * pad - size) // stride + 1, (x.shape[2] + 2 * pad - size) // stride + 1
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    out = np.full((x.shape[0], height, width), -np.inf, x.dtype)
    for i in range(size):
        for j in range(size):
            np.maximum(out, x[:, i : i + stride * (height - 1) + 1 : stride, j : j + stride * (width - 1) + 1 : stride],
                       out=out)
    return out


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


class NumpyResNet:
    """A folded `TaggingModel` with a ResNet backbone (fsdlib/models/resnet.py) from its state dict: the stem
    (7x7 stride 2, max pool), blocks `layer<s>.<b>` (stride 2 in the first block of stages 2-4), global max
    pooling, the curated head's linear layers with ReLU between them."""

    def __init__(self, state: dict[str, np.ndarray], activation: str) -> None:
        self.w = {k: v.astype(np.float32) for k, v in state.items()}
        self.activation = activation
        blocks = sorted({(int(m[1]), int(m[2])) for k in state if (m := re.match(r"backbone\.layer(\d)\.(\d+)\.", k))})
        self.blocks = [(f"backbone.layer{s}.{b}", 2 if s > 1 and b == 0 else 1) for s, b in blocks]
        heads = sorted({int(m[1]) for k in state if (m := re.match(r"heads\.curated\.(\d+)\.weight", k))})
        self.head = [f"heads.curated.{i}" for i in heads]
        if "backbone.conv1.weight" not in state or not self.blocks or not self.head:
            raise FsdError("not the state of a ResNet on log-mels")

    def _conv(self, name: str, x: np.ndarray, stride: int, pad: int) -> np.ndarray:
        return conv2d(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], stride, pad)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n_classes,) of one network input (1, n_mels, frames)."""
        x = max_pool(relu(self._conv("backbone.conv1", x, 2, 3)))
        for name, stride in self.blocks:
            shortcut = self._conv(f"{name}.downsample.0", x, stride, 0) if f"{name}.downsample.0.weight" in self.w else x
            out = relu(self._conv(f"{name}.conv1", x, stride, 1))
            x = relu(self._conv(f"{name}.conv2", out, 1, 1) + shortcut)
        h = x.max(axis=(1, 2))
        for i, name in enumerate(self.head):
            h = self.w[f"{name}.weight"] @ h + self.w[f"{name}.bias"]
            if i < len(self.head) - 1:
                h = relu(h)
        if self.activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-h.astype(np.float64)))
        e = np.exp(h.astype(np.float64) - h.max())
        return e / e.sum()


def numpy_supported(payload: dict[str, Any]) -> str | None:
    """Why the numpy engine cannot run this tagger file's contents (None: it can)."""
    if payload.get("mel_basis") is None:
        return "the file holds no mel filter bank (exported by an older fsdlib: export it again)"
    for m in payload["members"]:
        spec = m["spec"]
        if spec.get("family") != "resnet":
            return f"member {m['name']} is a {spec.get('family')} network (the numpy engine runs ResNets on log-mels)"
    return None


class NumpyTagger(TaggerBase):
    """A tagger of an exported file on numpy alone (the same `scores`, `tag_files`, `tag_windows` as `Tagger`)."""

    def __init__(self, payload: dict[str, Any], where: str | Path = "") -> None:
        why = numpy_supported(payload)
        if why:
            raise FsdError(f"the numpy engine cannot run this file: {why}", where or None)
        self.classes = list(payload["classes"])
        cfg = LogMelConfig(**payload["logmel"])
        self.mel = MelSpectrogram(cfg, payload["mel_basis"])
        self.members = []
        for m in payload["members"]:
            # the two settings inference reads (a full ModelSpec would import torch to check its augmentations)
            activation, pad_mode = m["spec"].get("activation", "sigmoid"), m["spec"].get("pad_mode", "zero")
            check_activation(activation)
            check_pad_mode(pad_mode)
            nets = [NumpyResNet(state, activation) for state in m["snapshots"]]
            self.members.append((m["name"], float(m["weight"]), [int(p) for p in m["pads"]] or [0], pad_mode, nets))
        if not self.members:
            raise FsdError("the ensemble has no model with a positive weight", where or None)

    def predict(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """(n_files, n_classes) ensemble probabilities of int16 waveforms at 44.1 kHz."""
        mels = [self.mel(w) for w in waves]
        preds = {}
        for name, _, pads, pad_mode, nets in self.members:
            out = np.zeros((len(mels), len(self.classes)))
            for i, power in enumerate(mels):
                for pad in pads:
                    x = power_to_input(pad_clip(power, pad, pad_mode, silence_floor(power)).T)[None]
                    out[i] += sum(net(x) for net in nets) / len(nets)
            preds[name] = np.clip(out / len(pads), 0.0, 1.0)
        return weighted_average(preds, {m[0]: m[1] for m in self.members}).astype(np.float32)


def read_tagger_file(path: str | Path) -> dict[str, Any]:
    """An exported tagger file's contents as plain data and numpy arrays, its format and version checked."""
    if not Path(path).is_file():
        raise FsdError("tagger file not found", path)
    return check_tagger_file(read_weights_file(path), path)


def open_tagger_file(path: str | Path, engine: str = "auto", device: str = "auto") -> TaggerBase:
    """A tagger of an exported file on an engine: "numpy" (no torch), "torch" (`fsdlib.tagger.load_tagger`, CPU or
    GPU), or "auto": numpy for a file of one network (the distilled model) on the CPU, torch otherwise."""
    check_choice("engine", engine, ENGINES)
    if engine != "torch":  # the torch engine reads the file itself: not twice
        payload = read_tagger_file(path)
        single = len(payload["members"]) == 1 and len(payload["members"][0]["snapshots"]) == 1
        if engine == "numpy" or (single and device in ("auto", "cpu") and numpy_supported(payload) is None):
            return NumpyTagger(payload, path)
    from fsdlib.tagger import load_tagger  # torch: imported only for this engine

    return load_tagger(path, device)


def load_numpy_tagger(path: str | Path) -> NumpyTagger:
    """The numpy engine's tagger of an exported file: `load_numpy_tagger("data/tagger_distilled.pt").scores([...])`."""
    return NumpyTagger(read_tagger_file(path), path)
