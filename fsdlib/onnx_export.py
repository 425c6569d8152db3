"""An exported ensemble as one ONNX file: every member network in one graph, run by onnxruntime without torch.

The graph takes one input per (member, TTA pad): the clip's network input at that pad, made by the numpy front end
of fsdlib/onnx_tagger.py (log-mel ResNets: (B, 1, n_mels, frames); EnvNets: (B, samples) in [-1, 1), at least the
network's minimum width). Time and batch axes are dynamic. Inside the graph each snapshot network (batch norms
folded) scores each of its member's inputs; the member's scores are averaged over snapshots and pads and clipped
to [0, 1], and the members are averaged with their ensemble weights (normalised): one output, `probabilities`
(B, n_classes), the torch engine's scores (docs/method.md §8, §13). Clips in one run must share their length: each
clip is its own full-length batch, or equal-length windows run together, so no padding ever enters a clip.

What the front end needs rides in the file's metadata (key `fsdlib`, JSON): class names, log-mel settings, the mel
filter bank as its non-zero band per filter (float64 bytes, base64: a few KB instead of 1.3 MB), and per member its
kind, pads, pad mode, activation, weight and input names.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fsdlib.export import LoadedEnsemble
from fsdlib.logmel import filter_bands, mel_basis
from fsdlib.onnx_tagger import ONNX_FORMAT, ONNX_VERSION, OUTPUT, input_name


class _TimeMax(nn.Module):
    """The EnvNet's global pool as the exporter needs it: its `AdaptiveMaxPool2d((10, 1))` is traced with the
    example's width fixed, while its input is always 10 rows high (fsdlib/models/envnet.py), so the pool is exactly
    the maximum over time."""

    def __init__(self, height: int) -> None:
        super().__init__()
        self.height = height

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._check(x.shape[2] == self.height)
        return x.amax(dim=3, keepdim=True)


def _exportable(model: nn.Module) -> nn.Module:
    """An inference network the exporter traces with a dynamic time axis: an EnvNet's pool over time as `_TimeMax`
    (a copy; `model` is untouched)."""
    pool = getattr(model.backbone, "global_pool", None)
    if not isinstance(pool, nn.AdaptiveMaxPool2d) or pool.output_size in (1, (1, 1)):
        return model
    height, width = pool.output_size
    if width != 1:
        raise ValueError(f"a global pool to {pool.output_size} has no exact time maximum")
    model = copy.copy(model)
    model.backbone = copy.copy(model.backbone)
    model.backbone._modules = dict(model.backbone._modules, global_pool=_TimeMax(height))
    return model


class _Member(nn.Module):
    """One member: its snapshot networks' mean probability over its inputs (one per TTA pad), clipped to [0, 1]."""

    def __init__(self, models: list[nn.Module], activation: str, n_pads: int) -> None:
        super().__init__()
        self.nets, self.activation, self.n_pads = nn.ModuleList(_exportable(m) for m in models), activation, n_pads

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for x in inputs:
            for net in self.nets:
                total = total + net.predict(x, self.activation)
        return (total / (len(inputs) * len(self.nets))).clamp(0.0, 1.0)


class _Ensemble(nn.Module):
    """The members' weighted mean, inputs in `input_name` order (members in order, each member's pads in order)."""

    def __init__(self, ensemble: LoadedEnsemble) -> None:
        super().__init__()
        members = ensemble.members
        self.members = nn.ModuleList(_Member(list(m.models), m.spec.activation, len(m.pads) or 1) for m in members)
        total = sum(m.weight for m in members)
        self.weights = [m.weight / total for m in members]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out, start = torch.zeros(()), 0
        for member, weight in zip(self.members, self.weights, strict=True):
            out = out + weight * member(list(inputs[start : start + member.n_pads]))
            start += member.n_pads
        return out


def sparse_bank(basis: np.ndarray) -> dict[str, Any]:
    """A mel filter bank (n_mels, bins) as each filter's first non-zero bin, band width and values (float64,
    base64): exact, and a few KB."""
    bands = filter_bands(basis)
    data = np.concatenate([weights for _, _, weights in bands]) if bands else np.zeros(0)
    return {"shape": list(basis.shape), "starts": [start for start, _, _ in bands],
            "widths": [stop - start for start, stop, _ in bands],
            "values": base64.b64encode(data.astype("<f8").tobytes()).decode("ascii")}


def _example(member: Any, n_mels: int) -> torch.Tensor:
    """A small input of the member's kind for tracing (its axes are exported as dynamic)."""
    if member.spec.kind == "logmel":
        return torch.randn(2, 1, n_mels, 40)
    return torch.randn(2, member.models[0].backbone.min_samples + 100) * 0.1


def metadata(ensemble: LoadedEnsemble) -> dict[str, Any]:
    """What the numpy front end needs to make the graph's inputs and name its outputs."""
    basis = mel_basis(ensemble.logmel) if ensemble.mel_basis is None else ensemble.mel_basis
    members = []
    for m in ensemble.members:
        pads = [int(p) for p in m.pads] or [0]
        entry = {"name": m.name, "kind": m.spec.kind, "weight": float(m.weight), "activation": m.spec.activation,
                 "pad_mode": m.spec.pad_mode, "pads": pads, "snapshots": len(m.models),
                 "inputs": [input_name(m.name, p) for p in pads]}
        if m.spec.kind == "wave":
            entry["min_samples"] = int(m.models[0].backbone.min_samples)
        members.append(entry)
    return {"format": ONNX_FORMAT, "version": ONNX_VERSION, "classes": list(ensemble.classes),
            "logmel": asdict(ensemble.logmel), "mel_basis": sparse_bank(basis), "members": members, "output": OUTPUT}


def external_data_path(path: Path) -> Path:
    """Where an ONNX file written with external weights keeps them: beside it, its name + ".data"."""
    return path.with_name(f"{path.name}.data")


def export_onnx(path: Path, ensemble: LoadedEnsemble, external: bool = False, optimize: bool = True) -> int:
    """Write the ensemble as one ONNX graph with its front-end metadata; returns the size in bytes (with the
    weights). `external`: weights in `external_data_path(path)` (ONNX's protobuf holds at most 2 GB; a paper-scale
    ensemble is larger). Each file is renamed into place complete, the weights before the graph."""
    import onnx_ir  # the exporter's own dependencies: needed to export, not to tag

    if not ensemble.members:
        raise ValueError("an ensemble without members")
    meta = metadata(ensemble)
    graph = _Ensemble(ensemble).eval()
    examples, names, dynamic, batch = [], [], [], torch.export.Dim("batch", min=1)
    for m, entry in zip(ensemble.members, meta["members"], strict=True):
        for name in entry["inputs"]:
            examples.append(_example(m, ensemble.logmel.n_mels))
            names.append(name)
            time_min = entry.get("min_samples", 1)
            dynamic.append({0: batch, examples[-1].ndim - 1: torch.export.Dim(f"time_{len(names)}", min=time_min)})
    with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, tuple(examples), dynamo=True, input_names=names, output_names=[OUTPUT],
                                    dynamic_shapes=(tuple(dynamic),), verbose=False, optimize=optimize)
    for node in program.model.graph.all_nodes():  # the exporter's notes per node: source paths and stack traces
        node.metadata_props.clear()
    program.model.metadata_props["fsdlib"] = json.dumps(meta)
    program.model.producer_name = "fsdlib"
    data = external_data_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent) as tmp:
        staged = Path(tmp)  # both files written under their final names: the graph names its weights' file
        onnx_ir.save(program.model, staged / path.name, external_data=data.name if external else None)
        if external:
            os.replace(staged / data.name, data)
        os.replace(staged / path.name, path)
    if not external:
        data.unlink(missing_ok=True)  # weights of an earlier export with external data
    return path.stat().st_size + (data.stat().st_size if external else 0)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's progress lines and its notes on optional packages (torchvision's operators) kept off the
    stage's output."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.onnx._internal.exporter._registration",
                                                    "onnxscript", "onnx_ir")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
