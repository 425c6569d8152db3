"""Stage `train`: one model's folds, trained at once on the hardware; settings from `models.<name>` in params.yaml."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from fsdlib.fold_workers import FoldJob, train_folds, train_job
from fsdlib.placement import host_cores, plan_slots
from stages.common import PARAMS, fold_ids, load_params, stage
from stages.settings import inference_config, model_spec, placement


@stage
def train(
    model: str = typer.Argument(..., help="model name under `models` in params.yaml"),
    fold: int | None = typer.Argument(None, help="one validation fold (default: every fold of folds.ids)"),
    params: Path = typer.Option(PARAMS, help="params file"),
    device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda (every GPU), cuda:N"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Train a model's folds (placement: `placement` in params.yaml); writes data/models/<model>/fold<k>/."""
    import torch

    p = load_params(params)
    folds = fold_ids(p, params) if fold is None else [fold]
    jobs = [FoldJob(model_spec(p, model, params), model, k, inference_config(p, params)) for k in folds]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: every rank trains each fold together
        results = [train_job(job, device, progress) for job in jobs]
    else:
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        slots = plan_slots(len(jobs), placement(p, params), device, host_cores(), n_gpus)
        results = train_folds(jobs, slots, progress)
    for job, result in zip(jobs, results, strict=True):
        print(f"{model} fold {job.fold}: validation lwlrap per cycle {[round(v, 4) for v in result.cycle_lwlrap]}")
