"""One file holding a trained ensemble for tagging, usable anywhere without the repository, params or DVC.

The file is a `torch.save` of plain data only (strings, numbers, lists, dicts, tensors), so it loads with
`torch.load(weights_only=True)`, which runs no pickled code: the class names, the log-mel and inference settings,
the mel filter bank, and per member its settings (a ModelSpec as a dict), ensemble weight, TTA pads and the
inference-ready weights of every snapshot (batch norms folded into their convolutions, fsdlib/models/fusion.py).
fsdlib/onnx_export.py writes the same ensemble as an ONNX graph, which tags without torch (fsdlib/onnx_tagger.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsdlib.atomic import save_torch
from fsdlib.errors import FsdError
from fsdlib.logmel import mel_basis
from fsdlib.models import TaggingModel, build_network
from fsdlib.models.fusion import fold_batch_norms, mark_inference_ready
from fsdlib.settings import InferenceConfig, LogMelConfig
from fsdlib.spec import ModelSpec, model_spec
from fsdlib.tags import TAGGER_FORMAT, TAGGER_VERSION, check_tagger_file


@dataclass(frozen=True)
class LoadedMember:
    """One model of an ensemble, its snapshots loaded and ready for inference (on the CPU until predicted)."""

    name: str
    spec: ModelSpec
    models: tuple[TaggingModel, ...]
    weight: float
    pads: tuple[int, ...]


@dataclass(frozen=True)
class LoadedEnsemble:
    """What tagging needs: classes, feature and inference settings, the members."""

    classes: tuple[str, ...]
    logmel: LogMelConfig
    inference: InferenceConfig
    members: tuple[LoadedMember, ...]
    mel_basis: np.ndarray | None = None  # the mel filter bank (n_mels, bins); None: computed from `logmel`


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: what the weights-only unpickler and YAML-style params both hold."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """A ModelSpec as plain data (every field)."""
    return {f.name: _plain(getattr(spec, f.name)) for f in fields(spec)}


def folded_model(spec: ModelSpec, n_classes: int, state: dict[str, torch.Tensor] | None = None) -> TaggingModel:
    """The spec's network in eval mode with its batch norms folded, `state` (folded weights) loaded when given, ready
    for inference (fsdlib/models/fusion.py)."""
    model = build_network(spec, n_classes).eval()
    fold_batch_norms(model)
    if state is not None:
        model.load_state_dict(state)
    return mark_inference_ready(model)


def export_ensemble(path: Path, ensemble: LoadedEnsemble) -> int:
    """Write the ensemble to one file, atomically; returns its size in bytes."""
    members = []
    for m in ensemble.members:
        states = []
        for model in m.models:
            folded = model.for_inference()
            states.append({k: v.detach().cpu().contiguous() for k, v in folded.state_dict().items()})
        members.append({"name": m.name, "spec": spec_to_dict(m.spec), "weight": float(m.weight),
                        "pads": [int(p) for p in m.pads], "snapshots": states})
    payload = {"format": TAGGER_FORMAT, "version": TAGGER_VERSION, "classes": list(ensemble.classes),
               "logmel": _plain(asdict(ensemble.logmel)), "inference": _plain(asdict(ensemble.inference)),
               "members": members,
               "mel_basis": torch.from_numpy(mel_basis(ensemble.logmel) if ensemble.mel_basis is None
                                             else ensemble.mel_basis)}
    save_torch(payload, path)
    return path.stat().st_size


def load_ensemble(path: str | Path) -> LoadedEnsemble:
    """Read an exported file (weights only: no code runs), checking its format and version."""
    path = Path(path)
    if not path.is_file():
        raise FsdError("tagger file not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file or one holding code: torch raises several types
        raise FsdError(f"not a loadable tagger file ({' '.join(str(exc).split())[:200]})", path) from None
    check_tagger_file(payload, path)
    try:
        classes = tuple(payload["classes"])
        members = tuple(_member(m, len(classes)) for m in payload["members"])
        basis = payload.get("mel_basis")  # absent from files exported before it was stored
        return LoadedEnsemble(classes, LogMelConfig(**payload["logmel"]), InferenceConfig(**payload["inference"]),
                              members, None if basis is None else basis.numpy())
    except (KeyError, TypeError, RuntimeError, FsdError) as exc:
        raise FsdError(f"damaged tagger file ({' '.join(str(exc).split())[:200]})", path) from None


def _member(entry: dict[str, Any], n_classes: int) -> LoadedMember:
    spec = model_spec(entry["spec"], entry["name"])
    models = tuple(folded_model(spec, n_classes, state) for state in entry["snapshots"])
    return LoadedMember(entry["name"], spec, models, float(entry["weight"]), tuple(entry["pads"]))


def load_members(specs: Sequence[tuple[str, ModelSpec, Sequence[Path], float, Sequence[int]]],
                 n_classes: int) -> tuple[LoadedMember, ...]:
    """Members from snapshot files (the repository's trained models): each snapshot loaded and prepared for
    inference once."""
    from fsdlib.predict import load_snapshot

    return tuple(LoadedMember(name, spec, tuple(load_snapshot(spec, n_classes, p, "cpu").for_inference()
                                                for p in paths), float(w), tuple(pads))
                 for name, spec, paths, w, pads in specs)
