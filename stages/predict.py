"""Stage `predict`: one model's test and OOF predictions over folds × snapshots × pads (padding TTA)."""

from pathlib import Path

import numpy as np
import pandas as pd
import typer

from fsdlib.atomic import atomic_path
from fsdlib.dataset import read_label_table
from fsdlib.inference import InferenceConfig
from fsdlib.predict import predict_snapshot_sets, snapshot_paths
from stages.common import PARAMS, build, load_params, section, stage
from stages.train import FEATURES, FOLDS, MODELS, fold_assignment, model_spec, open_subset

PREDICTIONS = Path("data/predictions")


def inference_config(params: dict, path: Path = PARAMS) -> InferenceConfig:
    return build(InferenceConfig, section(params, "inference", path), "inference", path)


@stage
def predict(
    model: str = typer.Argument(..., help="model name under `models` in params.yaml"),
    params: Path = typer.Option(PARAMS, help="params file"),
    device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda:N"),
) -> None:
    """Average the model's fold snapshots on the test set, and each fold's snapshots on its held-out clips."""
    p = load_params(params)
    spec = model_spec(p, model, params)
    cfg = inference_config(p, params)
    classes, labels = read_label_table(FEATURES / "labels.parquet")
    test, _ = open_subset("test", spec.kind, labels)
    curated, _ = open_subset("curated", spec.kind, labels)
    assignment = fold_assignment(pd.read_parquet(FOLDS), "curated", curated.fnames, FOLDS)
    folds = [int(k) for k in section(p, "folds", params)["ids"]]
    test_clips = [test[i] for i in range(len(test))]
    test_sum = np.zeros((len(test), len(classes)))
    oof = np.full((len(curated), len(classes)), np.nan, dtype=np.float32)
    for k in folds:
        paths = snapshot_paths(MODELS / model / f"fold{k}", spec.snapshot_cycles)
        held_out = np.flatnonzero(assignment == k)
        print(f"{model} fold {k}: {len(paths)} snapshots × pads {list(spec.tta_pads) or [0]}")
        oof[held_out], test_fold = predict_snapshot_sets(
            spec, len(classes), paths, [[curated[int(i)] for i in held_out], test_clips], spec.tta_pads, cfg, device)
        test_sum += test_fold
    with atomic_path(PREDICTIONS / f"{model}.npz") as tmp, tmp.open("wb") as f:
        np.savez(f, test_fnames=np.array(test.fnames), test=(test_sum / len(folds)).astype(np.float32),
                 curated_fnames=np.array(curated.fnames), oof=oof, classes=np.array(classes))
