"""Stage `predict`: one model's test and OOF predictions per snapshot cycle × pad (padding TTA), over its folds."""

from pathlib import Path

import typer

from fsdlib.fold_predictions import model_predictions, write_arrays
from fsdlib.paths import PATHS
from fsdlib.settings import PARAMS, InferenceConfig, Params
from fsdlib.spec import ModelSpec
from stages.common import stage


@stage
def predict(
    model: str = typer.Argument(..., help="model name under `models` in params.yaml"),
    params: Path = typer.Option(PARAMS, help="params file"),
    device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda:N"),
) -> None:
    """Predict the test set with every fold (averaged over folds) and each fold's held-out clips, per cycle and pad."""
    p = Params.load(params)
    spec, cfg = p.read(ModelSpec, f"models.{model}"), p.read(InferenceConfig, "inference")
    write_arrays(PATHS.predictions_of(model), model_predictions(model, spec, p.folds(), cfg, device))
