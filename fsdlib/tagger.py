"""Tagging new audio with a trained ensemble: the same features, inference path and weights as the pipeline."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsdlib.ensemble import weighted_average
from fsdlib.errors import FsdError
from fsdlib.export import LoadedEnsemble, load_ensemble, load_members
from fsdlib.inference import predict_clips
from fsdlib.logmel import MelSpectrogram
from fsdlib.paths import PATHS, Paths
from fsdlib.predict import snapshot_paths
from fsdlib.progress import progress_bar
from fsdlib.settings import InferenceConfig, LogMelConfig
from fsdlib.spec import ModelSpec
from fsdlib.tags import FORMATS, Tag, TaggerBase, expand_paths, render_tags  # noqa: F401  (this module's API too)


@dataclass(frozen=True)
class Member:
    """One model of the ensemble: its settings, its snapshot files (all folds), TTA pads and weight."""

    name: str
    spec: ModelSpec
    snapshots: tuple[Path, ...]
    weight: float
    pads: tuple[int, ...] = ()


def ensemble_members(which: str, spec_of: Callable[[str], ModelSpec], folds: Sequence[int],
                     paths: Paths = PATHS) -> list[Member]:
    """The trained ensemble's models with a positive weight (`which`: "fixed", "fitted", or "submitted" for the
    weights the submission used), with the snapshot cycles and pads the ensemble stage chose, of all folds."""
    if not paths.ensemble_weights.is_file():
        raise FsdError("no trained ensemble (run `dvc repro` first)", paths.ensemble_weights)
    ensemble = json.loads(paths.ensemble_weights.read_text())
    weights = ensemble[ensemble["submit"] if which == "submitted" else which]
    chosen = ensemble.get("snapshots", {})
    members = []
    for name, weight in weights.items():
        if weight > 0:
            spec = spec_of(name)
            cycles = chosen[name]["cycles"] if name in chosen else spec.snapshot_cycles
            pads = tuple(chosen[name]["pads"]) if name in chosen else spec.tta_pads
            snapshots = [p for k in folds for p in snapshot_paths(paths.fold_dir(name, k), cycles)]
            members.append(Member(name, spec, tuple(snapshots), float(weight), pads))
    return members


class Tagger(TaggerBase):
    """Class probabilities of waveforms from a weighted ensemble of snapshot-averaged models, loaded once.

    Build it from an exported file (`load_tagger`, fsdlib/export.py) or from the repository's trained models
    (`Tagger.from_members`).
    """

    def __init__(self, ensemble: LoadedEnsemble, device: str = "auto") -> None:
        if not ensemble.members:
            raise FsdError("the ensemble has no model with a positive weight")
        self.ensemble, self.members, self.classes = ensemble, list(ensemble.members), list(ensemble.classes)
        self.mel = MelSpectrogram(ensemble.logmel, ensemble.mel_basis)
        self.inference, self.device = ensemble.inference, device

    @classmethod
    def from_members(cls, members: Sequence[Member], classes: Sequence[str], logmel: LogMelConfig,
                     inference: InferenceConfig, device: str = "auto") -> Tagger:
        """A tagger of trained snapshot files (`ensemble_members`), each loaded once."""
        loaded = load_members([(m.name, m.spec, m.snapshots, m.weight, m.pads) for m in members], len(classes))
        return cls(LoadedEnsemble(tuple(classes), logmel, inference, loaded), device)

    def predict(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """(n_files, n_classes) ensemble probabilities of int16 waveforms at 44.1 kHz."""
        mels = self.mel.many(waves) if any(m.spec.kind == "logmel" for m in self.members) else None
        return self.predict_features(mels, waves)

    def predict_features(self, mels: Sequence[np.ndarray] | None, waves: Sequence[np.ndarray],
                         progress: str | None = None) -> np.ndarray:
        """The same from features already made: power log-mels (as the feature stores hold them; None when no
        member reads them) and int16 waveforms of the same clips; a progress bar over the snapshots when labelled."""
        preds = {}
        with progress_bar(progress or "", sum(len(m.models) for m in self.members), progress is not None) as advance:
            for m in self.members:
                clips = list(mels if m.spec.kind == "logmel" else waves)
                total = np.zeros((len(clips), len(self.classes)))
                for model in m.models:
                    total += predict_clips(model, clips, m.spec.kind, m.spec.activation, m.pads, m.spec.pad_mode,
                                           self.inference, self.device)
                    advance()
                preds[m.name] = total / len(m.models)
        return weighted_average(preds, {m.name: m.weight for m in self.members}).astype(np.float32)



def load_tagger(path: str | Path, device: str = "auto") -> Tagger:
    """A tagger from an exported ensemble file (`fsd export`): `load_tagger("data/tagger.pt").scores(["a.flac"])`."""
    return Tagger(load_ensemble(path), device)
