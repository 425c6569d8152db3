"""Stages `teacher` and `pseudo_label`: the teacher's noisy-clip predictions, then sharpened soft labels."""

from pathlib import Path

import numpy as np
import typer

from fsdlib.atomic import atomic_path
from fsdlib.dataset import read_label_table
from fsdlib.errors import FsdError
from fsdlib.predict import predict_snapshots, snapshot_paths
from fsdlib.pseudo import VARIANTS, label_frame, soft_labels
from stages.common import PARAMS, load_params, section, stage
from stages.train import FEATURES, MODELS, PSEUDO, model_spec, open_subset

TEACHER = PSEUDO / "teacher.npz"


@stage
def teacher(
    params: Path = typer.Option(PARAMS, help="params file"),
    device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda:N"),
) -> None:
    """Predict every noisy clip at full length with each teacher fold (mean over its snapshots)."""
    p = load_params(params)
    name = section(p, "spl", params)["teacher"]
    spec = model_spec(p, name, params)
    classes, labels = read_label_table(FEATURES / "labels.parquet")
    noisy, _ = open_subset("noisy", spec.kind, labels)
    clips = [noisy[i] for i in range(len(noisy))]
    folds = [int(k) for k in section(p, "folds", params)["ids"]]
    preds = []
    for k in folds:
        paths = snapshot_paths(MODELS / name / f"fold{k}")
        print(f"teacher {name} fold {k}: {len(paths)} snapshots on {len(clips)} noisy clips")
        preds.append(predict_snapshots(spec, len(classes), paths, clips, device=device))
    with atomic_path(TEACHER) as tmp, tmp.open("wb") as f:
        np.savez(f, fnames=np.array(noisy.fnames), folds=np.array(folds), preds=np.stack(preds),
                 classes=np.array(classes))


@stage
def pseudo_label(params: Path = typer.Option(PARAMS, help="params file")) -> None:
    """Sharpen the teacher's predictions (T = spl.temperature) into both variants' soft labels."""
    temperature = float(section(load_params(params), "spl", params)["temperature"])
    if not TEACHER.is_file():
        raise FsdError("teacher predictions not found (run the teacher stage)", TEACHER)
    with np.load(TEACHER) as z:
        fnames, folds, preds, classes = list(z["fnames"]), z["folds"].tolist(), z["preds"], list(z["classes"])
    fold_preds = dict(zip(folds, preds, strict=True))
    for variant in VARIANTS:
        table = label_frame(soft_labels(fold_preds, variant, temperature), fnames, classes, variant, temperature)
        with atomic_path(PSEUDO / f"{variant}.parquet") as tmp:
            table.to_parquet(tmp, index=False)
        print(f"{variant}: {len(table)} soft labels, T = {temperature}")
