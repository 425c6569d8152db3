"""Stage `train`: one model's folds, trained at once on the hardware; settings from `models.<name>` in params.yaml."""

from __future__ import annotations

from pathlib import Path

import typer

from fsdlib.fold_workers import FoldJob, train_model
from fsdlib.placement import Placement
from fsdlib.settings import PARAMS, InferenceConfig, Params
from fsdlib.spec import ModelSpec
from stages.common import stage


@stage
def train(
    model: str = typer.Argument(..., help="model name under `models` in params.yaml"),
    fold: int | None = typer.Argument(None, help="one validation fold (default: every fold of folds.ids)"),
    params: Path = typer.Option(PARAMS, help="params file"),
    device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda (every GPU), cuda:N"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Train a model's folds (placement: `placement` in params.yaml); writes data/models/<model>/fold<k>/."""
    p = Params.load(params)
    spec, cfg = p.read(ModelSpec, f"models.{model}"), p.read(InferenceConfig, "inference")
    jobs = [FoldJob(spec, model, k, cfg) for k in (p.folds() if fold is None else [fold])]
    for job, result in zip(jobs, train_model(jobs, p.read(Placement, "placement"), device, progress), strict=True):
        print(f"{model} fold {job.fold}: validation lwlrap per cycle {[round(v, 4) for v in result.cycle_lwlrap]}")
