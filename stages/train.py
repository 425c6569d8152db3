"""Stage `train`: one (model, fold) of the ensemble, settings from `models.<name>` in params.yaml."""

from pathlib import Path

import numpy as np
import pandas as pd
import typer

from fsdlib.dataset import read_label_table
from fsdlib.errors import FsdError
from fsdlib.predict import snapshot_paths
from fsdlib.pseudo import labels_for_fold
from fsdlib.store import FeatureStore
from fsdlib.train import FoldData, ModelSpec, train_fold
from stages.common import PARAMS, build, load_params, section, stage

FEATURES = Path("data/features")
FOLDS = Path("data/folds.parquet")
MODELS = Path("data/models")
PSEUDO = Path("data/pseudo")
STATE = Path("state")


def model_spec(params: dict, name: str, path: Path = PARAMS) -> ModelSpec:
    """The ModelSpec of `models.<name>`."""
    return build(ModelSpec, section(params, f"models.{name}", path), f"models.{name}", path)


def open_subset(subset: str, kind: str, labels: dict, features: Path = FEATURES) -> tuple[FeatureStore, np.ndarray]:
    """A subset's feature store and its targets, checked to be in the same clip order."""
    store = FeatureStore.open(features / f"{subset}.{kind}.arrow")
    if tuple(store.fnames) != labels[subset].fnames:
        raise FsdError(f"clip order differs from {features / 'labels.parquet'}; rerun the features stage", store.path)
    return store, labels[subset].targets


def fold_data(spec: ModelSpec, fold: int, features: Path = FEATURES, folds: Path = FOLDS) -> tuple[FoldData, int]:
    """Stores, targets and the fold split of one (model, fold); also returns the number of classes."""
    classes, labels = read_label_table(features / "labels.parquet")
    curated, curated_targets = open_subset("curated", spec.kind, labels, features)
    table = pd.read_parquet(folds)
    assignment = fold_assignment(table, "curated", curated.fnames, folds)
    if fold not in set(assignment.tolist()):
        raise FsdError(f"fold {fold} does not exist (folds are {sorted(set(assignment.tolist()))})", folds)
    data = FoldData(curated, curated_targets, np.flatnonzero(assignment != fold), np.flatnonzero(assignment == fold))
    if spec.multitask or spec.spl:
        data.noisy, data.noisy_targets = open_subset("noisy", spec.kind, labels, features)
    if spec.spl:
        source = PSEUDO / f"{spec.spl_variant}.parquet"
        if not source.is_file():
            raise FsdError("pseudo labels not found (run the pseudo_label stage)", source)
        data.spl_targets = labels_for_fold(pd.read_parquet(source), fold, data.noisy.fnames, classes, str(source))
        data.spl_noisy_idx = np.flatnonzero(fold_assignment(table, "noisy", data.noisy.fnames, folds) != fold)
    return data, len(classes)


def fold_assignment(table: pd.DataFrame, subset: str, fnames: list[str], source: Path) -> np.ndarray:
    """The fold of each clip of a subset, in the store's order."""
    rows = table[table["subset"] == subset]
    fold_of = dict(zip(rows["fname"], rows["fold"], strict=True))
    missing = [f for f in fnames if f not in fold_of]
    if missing:
        raise FsdError(f"{subset} clip {missing[0]!r} has no fold; rerun the folds stage", source)
    return np.array([fold_of[f] for f in fnames])


@stage
def train(
    model: str = typer.Argument(..., help="model name under `models` in params.yaml"),
    fold: int = typer.Argument(..., help="validation fold"),
    params: Path = typer.Option(PARAMS, help="params file"),
    device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda:N"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Train one model on one fold; writes data/models/<model>/fold<k>/."""
    spec = model_spec(load_params(params), model, params)
    data, n_classes = fold_data(spec, fold)
    init = snapshot_paths(MODELS / spec.init_from / f"fold{fold}")[-1] if spec.init_from else None
    result = train_fold(spec, data, n_classes, MODELS / model / f"fold{fold}", STATE / f"{model}-fold{fold}",
                        name=model, fold=fold, init_weights=init, device=device, progress=progress)
    print(f"{model} fold {fold}: validation lwlrap per cycle {[round(v, 4) for v in result.cycle_lwlrap]}")
