"""A fast single network distilled from the trained ensemble (beyond the paper, docs/method.md §13).

The submitted ensemble (its exported file) predicts the clips the distilled network learns from: noisy clips and,
when asked, the test clips' audio (never their labels); curated clips keep their labels, or take the ensemble's
predictions too. One network of the settings in `distill.model` is
trained on those soft predictions with the one training loop (fsdlib/train.py), one curated fold held out to
score it against the true labels, and exported in the tagger file format (and as ONNX) with itself as the only
member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fsdlib.batches import FoldData
from fsdlib.dataset import read_label_table
from fsdlib.errors import FsdError
from fsdlib.export import LoadedEnsemble, LoadedMember, export_ensemble
from fsdlib.fold_data import curated_folds, open_subset
from fsdlib.metrics import lwlrap
from fsdlib.onnx_export import export_onnx
from fsdlib.paths import PATHS, Paths
from fsdlib.predict import load_snapshot, snapshot_paths
from fsdlib.spec import DISTILL_SUBSETS, DistillSettings
from fsdlib.store import FeatureStore
from fsdlib.tagger import Tagger
from fsdlib.tags import TaggerBase
from fsdlib.train import train_fold

NAME = "distilled"


class StoreChain:
    """Feature stores of one kind read as one: clip i is clip i of the first store, then of the next, and so on."""

    def __init__(self, stores: Sequence[FeatureStore]) -> None:
        self.stores = list(stores)
        self.paths = tuple(s.path for s in self.stores)
        self.fnames = [f for s in self.stores for f in s.fnames]
        self.lengths = np.concatenate([s.lengths for s in self.stores]) if self.stores else np.zeros(0, np.int64)
        self._where = [(k, i) for k, s in enumerate(self.stores) for i in range(len(s))]

    def __len__(self) -> int:
        return len(self._where)

    def __getitem__(self, i: int) -> np.ndarray:
        k, j = self._where[i]
        return self.stores[k][j]


@dataclass(frozen=True)
class DistillSet:
    """What the distilled network learns from: the chained stores of the subsets, the ensemble's predictions of
    them (targets), the true labels where known (curated; zeros elsewhere) and the curated fold of each clip (-1
    for clips of other subsets)."""

    clips: dict[str, StoreChain]  # by store kind
    targets: np.ndarray
    truth: np.ndarray
    folds: np.ndarray
    counts: dict[str, int]


def open_distill_set(tagger: TaggerBase, subsets: Sequence[str], curated_targets: str,
                     paths: Paths = PATHS, progress: bool = True) -> DistillSet:
    """The subsets' stores (each kind the tagger or the distilled network may read) and their targets: the
    ensemble's predictions of their clips (`tagger`: either engine), or for curated clips their labels
    (`curated_targets`: labels or ensemble)."""
    classes, labels = read_label_table(paths.labels)
    if list(classes) != list(tagger.classes):
        raise FsdError("the tagger file's classes differ from the label table's; rerun the export stage",
                       paths.tagger)
    ordered = [s for s in DISTILL_SUBSETS if s in subsets]
    stores = {kind: {s: open_subset(s, kind, labels, paths.features)[0] for s in ordered}
              for kind in ("logmel", "wave")}
    targets = []
    for subset in ordered:
        n = len(labels[subset].fnames)
        if subset == "curated" and curated_targets == "labels":
            targets.append(labels[subset].targets)
        elif n:
            targets.append(tagger.predict_features([stores["logmel"][subset][i] for i in range(n)],
                                                   [stores["wave"][subset][i] for i in range(n)],
                                                   progress=f"ensemble predictions of {subset} clips" if progress
                                                   else None))
    counts = {s: len(labels[s].fnames) for s in ordered}
    n_classes, n_cur = len(classes), counts["curated"]
    total = sum(counts.values())
    truth = np.zeros((total, n_classes), np.float32)
    truth[:n_cur] = labels["curated"].targets
    folds = np.full(total, -1)
    folds[:n_cur] = curated_folds(stores["logmel"]["curated"], paths)
    chains = {kind: StoreChain([stores[kind][s] for s in ordered]) for kind in stores}
    return DistillSet(chains, np.concatenate(targets).astype(np.float32), truth, folds, counts)


def distill_fold_data(data: DistillSet, kind: str, holdout_fold: int) -> FoldData:
    """Every clip trains except the held-out curated fold, which validation scores against its true labels."""
    if holdout_fold not in set(data.folds[data.folds >= 0].tolist()):
        raise FsdError(f"distill.holdout_fold: fold {holdout_fold} does not exist "
                       f"(folds are {sorted(set(data.folds[data.folds >= 0].tolist()))})")
    return FoldData(data.clips[kind], data.targets, np.flatnonzero(data.folds != holdout_fold),
                    np.flatnonzero(data.folds == holdout_fold), truth=data.truth)


def distill(tagger: Tagger, settings: DistillSettings, paths: Paths = PATHS, device: str = "auto",
            progress: bool = True, targets_by: TaggerBase | None = None) -> dict:
    """Train the distilled network and export it to `paths.distilled_tagger`; return its scores beside the
    ensemble's (test lwlrap when the test labels are known, the held-out fold's lwlrap) and the files' sizes.
    `targets_by`: the engine that predicts the targets (default `tagger`; the exported ONNX graph of the same
    ensemble is twice as fast on a CPU)."""
    spec, holdout_fold = settings.model, settings.holdout_fold
    data = open_distill_set(targets_by or tagger, settings.subsets, settings.curated_targets, paths, progress)
    result = train_fold(spec, distill_fold_data(data, spec.kind, holdout_fold), len(tagger.classes), paths.distill,
                        paths.state / NAME, name=NAME, fold=holdout_fold, device=device, inference=tagger.inference,
                        progress=progress)
    models = tuple(load_snapshot(spec, len(tagger.classes), p, "cpu").for_inference()
                   for p in snapshot_paths(paths.distill, spec.snapshot_cycles))
    single = Tagger(LoadedEnsemble(tagger.ensemble.classes, tagger.ensemble.logmel, tagger.inference,
                                   (LoadedMember(NAME, spec, models, 1.0, tuple(spec.tta_pads)),)), device)
    size = export_ensemble(paths.distilled_tagger, single.ensemble)
    onnx_size = export_onnx(paths.distilled_onnx, single.ensemble)
    metrics = {"clips": data.counts, "holdout_fold": holdout_fold, "holdout": {NAME: round(result.cycle_lwlrap[-1], 6)},
               "size_mb": {NAME: round(size / 1e6, 2), "ensemble": round(paths.tagger.stat().st_size / 1e6, 2)},
               "onnx_mb": {NAME: round(onnx_size / 1e6, 2)}}
    n_test = data.counts.get("test", 0)
    known = data.targets[len(data.targets) - n_test:] if n_test else None
    metrics.update(test_scores(tagger, single, known, paths))
    return metrics


def test_scores(ensemble: Tagger, single: Tagger, ensemble_test: np.ndarray | None, paths: Paths = PATHS) -> dict:
    """Test lwlrap of the distilled network and of the ensemble (its predictions `ensemble_test` when already
    made), when the test labels are known."""
    _, labels = read_label_table(paths.labels)
    test = labels["test"]
    if not len(test.fnames) or test.targets is None:
        return {}
    mels, _ = open_subset("test", "logmel", labels, paths.features)
    waves, _ = open_subset("test", "wave", labels, paths.features)
    clips = ([mels[i] for i in range(len(mels))], [waves[i] for i in range(len(waves))])
    if ensemble_test is None:
        ensemble_test = ensemble.predict_features(*clips)
    scores = {NAME: lwlrap(test.targets, single.predict_features(*clips)), "ensemble": lwlrap(test.targets, ensemble_test)}
    return {"test": {k: round(float(v), 6) for k, v in scores.items()}}


def summary(metrics: dict) -> pd.DataFrame:
    """The distilled network beside the ensemble, one row each, as text ("-" where not measured)."""
    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    rows = {name: {"test lwlrap": shown(metrics.get("test", {}).get(name)),
                   "held-out fold lwlrap": shown(metrics["holdout"].get(name)),
                   "file MB": f"{metrics['size_mb'][name]:.1f}"} for name in (NAME, "ensemble")}
    return pd.DataFrame(rows).T
