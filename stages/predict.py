"""Stage `predict`: one model's test and OOF predictions per snapshot cycle × pad (padding TTA), over its folds."""

from pathlib import Path

import typer

from fsdlib.fold_predictions import model_predictions, write_arrays
from fsdlib.paths import PATHS
from stages.common import PARAMS, fold_ids, load_params, stage
from stages.settings import inference_config, model_spec


@stage
def predict(
    model: str = typer.Argument(..., help="model name under `models` in params.yaml"),
    params: Path = typer.Option(PARAMS, help="params file"),
    device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda:N"),
) -> None:
    """Predict the test set with every fold (averaged over folds) and each fold's held-out clips, per cycle and pad."""
    p = load_params(params)
    arrays = model_predictions(model, model_spec(p, model, params), fold_ids(p, params), inference_config(p, params),
                               device)
    write_arrays(PATHS.predictions_of(model), arrays)
