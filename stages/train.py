"""Stage `train`: one (model, fold) of the ensemble, settings from `models.<name>` in params.yaml."""

from pathlib import Path

import typer

from fsdlib.fold_data import fold_data, init_snapshot
from fsdlib.paths import PATHS
from fsdlib.train import train_fold
from stages.common import PARAMS, load_params, stage
from stages.settings import model_spec


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
    result = train_fold(spec, data, n_classes, PATHS.fold_dir(model, fold), PATHS.state_dir(model, fold), name=model,
                        fold=fold, init_weights=init_snapshot(spec, fold), device=device, progress=progress)
    print(f"{model} fold {fold}: validation lwlrap per cycle {[round(v, 4) for v in result.cycle_lwlrap]}")
