"""Tagging with an exported ONNX file on onnxruntime, without torch: the numpy front end and one session.

The file (fsdlib/onnx_export.py) holds every member network, the snapshot and TTA averaging and the ensemble
weights in one graph; its metadata holds what the front end needs. The front end is the torch engine's, in numpy:
the mel spectrogram of fsdlib/logmel.py with the file's filter bank, each TTA pad at the clip's silence floor and
the dB standardisation of fsdlib/clip_input.py for log-mel members; int16 / 2^15, the pads and centring of clips
shorter than the network's minimum width for EnvNets. Clips of equal length run as one batch, any other clip on
its own at full length, so nothing pads a clip but its TTA pads (docs/method.md §8, §13).
"""

from __future__ import annotations

import base64
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from fsdlib.audio import to_float
from fsdlib.clip_input import pad_clip, power_to_input, silence_floor
from fsdlib.errors import FsdError
from fsdlib.logmel import MelSpectrogram
from fsdlib.progress import progress_bar
from fsdlib.settings import LogMelConfig
from fsdlib.tags import TaggerBase

ONNX_FORMAT, ONNX_VERSION = "fsdlib-tagger-onnx", 1  # of the metadata entry `fsdlib`
OUTPUT = "probabilities"


def input_name(member: str, pad: int) -> str:
    """The graph input of one member at one TTA pad."""
    return f"{member}__pad{pad}"


def dense_bank(entry: dict[str, Any]) -> np.ndarray:
    """The mel filter bank (n_mels, bins) float64 from its stored non-zero bands (`onnx_export.sparse_bank`)."""
    n_mels, bins = entry["shape"]
    values = np.frombuffer(base64.b64decode(entry["values"]), dtype="<f8")
    bank, at = np.zeros((n_mels, bins)), 0
    for row, (start, width) in enumerate(zip(entry["starts"], entry["widths"], strict=True)):
        bank[row, start : start + width] = values[at : at + width]
        at += width
    if at != len(values):
        raise ValueError("mel filter bank bands do not match their values")
    return bank


def centred(wave: np.ndarray, width: int) -> np.ndarray:
    """A waveform shorter than `width` centred in `width` zeros (as the EnvNet places it); longer ones as they are."""
    if len(wave) >= width:
        return wave
    out = np.zeros(width, wave.dtype)
    start = (width - len(wave)) // 2
    out[start : start + len(wave)] = wave
    return out


def _member_input(member: dict[str, Any], pad: int, power: np.ndarray | None, wave: np.ndarray) -> np.ndarray:
    """One clip's input to the graph for a member at one pad (without the batch axis)."""
    if member["kind"] == "logmel":
        return power_to_input(pad_clip(power, pad, member["pad_mode"], silence_floor(power)).T)[None]
    samples = pad_clip(to_float(wave), pad, member["pad_mode"], 0.0)
    return centred(samples, member["min_samples"])


class OnnxTagger(TaggerBase):
    """A tagger of an exported ONNX file (`scores`, `tag_files`, `tag_windows` as the torch `Tagger`)."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        """`threads`: how many runs at once (0: one per core)."""
        import onnxruntime as ort  # late: a module that only names the format does not pay for it

        path = Path(path)
        if not path.is_file():
            raise FsdError("tagger file not found", path)
        # One thread per run and `threads` runs at once (clips, or parts of a batch): on 2 cores 1.5-2x the
        # throughput of one run at a time on two threads, whose many small operators wait on each other.
        self.threads = threads or os.cpu_count() or 1
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for damaged or foreign files
            raise FsdError(f"not a loadable ONNX file ({' '.join(str(exc).split())[:200]})", path) from None
        self.meta = read_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        try:
            self.classes = list(self.meta["classes"])
            self.members = list(self.meta["members"])
            self.mel = MelSpectrogram(LogMelConfig(**self.meta["logmel"]), dense_bank(self.meta["mel_basis"]))
            graph_inputs = {i.name for i in self.session.get_inputs()}
            wanted = {name for m in self.members for name in m["inputs"]}
        except (KeyError, TypeError, ValueError, FsdError) as exc:
            raise FsdError(f"damaged fsdlib metadata ({' '.join(str(exc).split())[:200]})", path) from None
        if wanted != graph_inputs or not self.members:
            raise FsdError(f"the graph's inputs {sorted(graph_inputs)} are not its members' {sorted(wanted)}", path)

    def predict(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """(n_files, n_classes) ensemble probabilities of int16 waveforms at 44.1 kHz."""
        logmel = any(m["kind"] == "logmel" for m in self.members)
        return self.predict_features(self.mel.many(waves, self.threads) if logmel else None, waves)

    def predict_features(self, mels: Sequence[np.ndarray] | None, waves: Sequence[np.ndarray],
                         progress: str | None = None) -> np.ndarray:
        """The same from features already made, as the torch `Tagger.predict_features`: power log-mels (n_mels,
        frames; None when no member reads them) and int16 waveforms of the same clips; a progress bar over the
        batches when labelled."""
        powers = [None] * len(waves) if mels is None else mels
        out = np.zeros((len(waves), len(self.classes)), np.float32)
        same_length: dict[int, list[int]] = defaultdict(list)
        for i, wave in enumerate(waves):
            same_length[len(wave)].append(i)
        groups = list(same_length.values())
        if len(groups) < self.threads:  # a few equal-length batches (windows of a recording): split among threads
            groups = [part for g in groups for part in np.array_split(g, min(len(g), self.threads))]

        def run(idx: Sequence[int]) -> None:
            made: dict[tuple, np.ndarray] = {}  # members of one kind, pad and pad mode share their input
            feeds = {}
            for m in self.members:
                for pad, name in zip(m["pads"], m["inputs"], strict=True):
                    key = (m["kind"], pad, m["pad_mode"], m.get("min_samples"))
                    if key not in made:
                        made[key] = np.stack([_member_input(m, pad, powers[i], waves[i]) for i in idx])
                    feeds[name] = made[key]
            out[list(idx)] = self.session.run([self.meta["output"]], feeds)[0]

        with progress_bar(progress or "", len(groups), progress is not None) as advance:
            if self.threads == 1 or len(groups) == 1:
                for idx in groups:
                    run(idx)
                    advance()
            else:
                with ThreadPoolExecutor(self.threads) as pool:
                    for _ in pool.map(run, groups):  # onnxruntime runs release the GIL
                        advance()
        return out


def read_metadata(props: dict[str, str], path: str | Path) -> dict[str, Any]:
    """The file's fsdlib metadata, checked for its format and version."""
    if "fsdlib" not in props:
        raise FsdError("an ONNX file without fsdlib tagger metadata (not exported by `fsd export`)", path)
    try:
        meta = json.loads(props["fsdlib"])
    except ValueError:
        raise FsdError("damaged fsdlib metadata (not JSON)", path) from None
    if not isinstance(meta, dict) or meta.get("format") != ONNX_FORMAT:
        raise FsdError(f"not an fsdlib tagger file (no format {ONNX_FORMAT!r})", path)
    if meta.get("version") != ONNX_VERSION:
        raise FsdError(f"ONNX tagger format version {meta.get('version')} (this fsdlib reads version {ONNX_VERSION}: "
                       "export it again with this version)", path)
    return meta


def load_onnx_tagger(path: str | Path, threads: int = 0) -> OnnxTagger:
    """A tagger of an exported ONNX file: `load_onnx_tagger("data/tagger_distilled.onnx").scores(["a.flac"])`."""
    return OnnxTagger(path, threads)
