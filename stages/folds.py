"""Stage `folds`: cross-validation folds of curated clips and a fold per noisy clip, as one parquet."""

from pathlib import Path

import typer

from fsdlib.atomic import atomic_path
from fsdlib.dataset import read_dataset
from fsdlib.folds import FoldConfig, make_folds
from fsdlib.paths import PATHS
from stages.common import PARAMS, build, load_params, section, stage


@stage
def folds(params: Path = typer.Option(PARAMS, help="params file"), out: Path = typer.Option(PATHS.folds)) -> None:
    """Split curated (and noisy) clips into folds."""
    p = load_params(params)
    values = {k: v for k, v in section(p, "folds", params).items() if k != "ids"}  # ids: which folds to train
    cfg = build(FoldConfig, values, "folds", params)
    table = make_folds(read_dataset(section(p, "data", params)["root"]), cfg)
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
