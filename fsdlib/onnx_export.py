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
import onnx
import onnx_ir
import torch
from onnx import helper, numpy_helper
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


class _Net(nn.Module):
    """One snapshot network as the exporter traces it: probabilities of its input under the member's activation."""

    def __init__(self, model: nn.Module, activation: str) -> None:
        super().__init__()
        self.net, self.activation = _exportable(model), activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.predict(x, self.activation)


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


def traced_network(member: Any, n_mels: int) -> onnx.ModelProto:
    """The member's first snapshot network traced once (batch and time axes dynamic): one input `x`, one output
    `p`, its weights as initializers named by their parameter names (`net.<...>`)."""
    example = _example(member, n_mels)
    time_min = member.models[0].backbone.min_samples if member.spec.kind == "wave" else 1
    dynamic = {0: torch.export.Dim("batch", min=1), example.ndim - 1: torch.export.Dim("time", min=time_min)}
    with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_Net(member.models[0], member.spec.activation).eval(), (example,), dynamo=True,
                                    input_names=["x"], output_names=["p"], dynamic_shapes=(dynamic,), verbose=False,
                                    optimize=False)
    return onnx_ir.serde.serialize_model(program.model)


def _copy_network(graph: onnx.GraphProto, net: onnx.GraphProto, source: str, weights: str, values: str) -> str:
    """Append a copy of a traced network's nodes to `graph`, reading input `source` and the weights named
    `weights` + the traced names (added by the caller), its own values prefixed with `values`; its output's name."""
    traced_weights = {t.name for t in net.initializer}

    def renamed(value: str) -> str:
        if value == "x":
            return source
        if not value:  # an optional input left out
            return value
        return f"{weights}{value}" if value in traced_weights else f"{values}{value}"

    for node in net.node:
        copied = onnx.NodeProto()
        copied.CopyFrom(node)
        copied.name = f"{values}{node.name}"
        del copied.metadata_props[:]  # the exporter's notes: source paths and stack traces
        copied.input[:] = [renamed(v) for v in node.input]
        copied.output[:] = [renamed(v) for v in node.output]
        graph.node.append(copied)
    return renamed("p")


def ensemble_graph(ensemble: LoadedEnsemble, meta: dict[str, Any]) -> onnx.ModelProto:
    """The whole ensemble as one graph, each member's network traced once (`traced_network`) and copied per
    snapshot and TTA pad: the copies of snapshot s share its weights, the copies of pad p read its input. Each
    member's probabilities are summed, divided by their count and clipped to [0, 1]; the members are summed with
    their normalised weights into `probabilities`. Tracing is the slow part of an export (about a second per
    network call), so one trace per architecture and activation instead of one per call."""
    total = sum(m.weight for m in ensemble.members)
    graph = onnx.GraphProto(name="fsdlib_ensemble")
    terms, opsets, ir_version, k = [], {}, 0, 0
    traces: dict[tuple[str, str], onnx.ModelProto] = {}  # members of one architecture and activation share a trace
    for i, (member, entry) in enumerate(zip(ensemble.members, meta["members"], strict=True)):
        key = (member.spec.activation, repr(member.models[0]))  # the repr lists every layer and its settings
        if key not in traces:
            traces[key] = traced_network(member, ensemble.logmel.n_mels)
        traced = traces[key]
        net = traced.graph
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in net.node for a in n.attribute):
            raise ValueError(f"{member.name}: a traced network with subgraphs cannot be copied")
        opsets.update({o.domain: o.version for o in traced.opset_import})
        ir_version = max(ir_version, traced.ir_version)
        for s, snapshot in enumerate(member.models):
            state = _Net(snapshot, member.spec.activation).state_dict()
            for t in net.initializer:
                if t.name not in state or tuple(state[t.name].shape) != tuple(t.dims):
                    raise ValueError(f"{member.name}: the traced weight {t.name} is not a parameter of the network")
                graph.initializer.append(numpy_helper.from_array(state[t.name].detach().numpy(), f"m{i}.s{s}.{t.name}"))
        outputs = []
        for p, name in enumerate(entry["inputs"]):
            k += 1
            dims = [d.dim_value if d.HasField("dim_value") else "batch" for d in net.input[0].type.tensor_type.shape.dim]
            dims[-1] = f"time_{k}"
            graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims))
            outputs += [_copy_network(graph, net, name, f"m{i}.s{s}.", f"m{i}.p{p}.s{s}.")
                        for s in range(len(member.models))]
        scale, low, high, weight = (f"m{i}.{n}" for n in ("scale", "low", "high", "weight"))
        for const, value in ((scale, 1.0 / len(outputs)), (low, 0.0), (high, 1.0), (weight, member.weight / total)):
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), const))
        graph.node.extend([
            helper.make_node("Sum", outputs, [f"m{i}.sum"], name=f"m{i}.sum"),
            helper.make_node("Mul", [f"m{i}.sum", scale], [f"m{i}.mean"], name=f"m{i}.mean"),
            helper.make_node("Clip", [f"m{i}.mean", low, high], [f"m{i}.clipped"], name=f"m{i}.clip"),
            helper.make_node("Mul", [f"m{i}.clipped", weight], [f"m{i}.term"], name=f"m{i}.term")])
        terms.append(f"m{i}.term")
    graph.node.append(helper.make_node("Sum", terms, [OUTPUT], name="ensemble"))
    graph.output.append(helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT,
                                                      ["batch", len(ensemble.classes)]))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                             ir_version=ir_version, producer_name="fsdlib")


def external_data_path(path: Path) -> Path:
    """Where an ONNX file written with external weights keeps them: beside it, its name + ".data"."""
    return path.with_name(f"{path.name}.data")


def export_onnx(path: Path, ensemble: LoadedEnsemble, external: bool = False) -> int:
    """Write the ensemble as one ONNX graph with its front-end metadata; returns the size in bytes (with the
    weights). `external`: weights in `external_data_path(path)` (ONNX's protobuf holds at most 2 GB; a paper-scale
    ensemble is larger). Each file is renamed into place complete, the weights before the graph."""
    if not ensemble.members:
        raise ValueError("an ensemble without members")
    meta = metadata(ensemble)
    model = onnx_ir.serde.deserialize_model(ensemble_graph(ensemble, meta))
    model.metadata_props["fsdlib"] = json.dumps(meta)
    model.producer_name = "fsdlib"
    data = external_data_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent) as tmp:
        staged = Path(tmp)  # both files written under their final names: the graph names its weights' file
        onnx_ir.save(model, staged / path.name, external_data=data.name if external else None)
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
