"""Stage `folds`: cross-validation folds of curated clips and a fold per noisy clip, as one parquet."""

from pathlib import Path

import typer

from fsdlib.atomic import atomic_path
from fsdlib.dataset import read_dataset
from fsdlib.folds import make_folds
from fsdlib.paths import PATHS
from fsdlib.settings import PARAMS, DataSettings, FoldSettings, Params
from stages.common import stage


@stage
def folds(params: Path = typer.Option(PARAMS, help="params file"), out: Path = typer.Option(PATHS.folds)) -> None:
    """Split curated (and noisy) clips into folds."""
    p = Params.load(params)
    table = make_folds(read_dataset(p.read(DataSettings, "data").root), p.read(FoldSettings, "folds"))
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
