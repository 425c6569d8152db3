"""Stage `features`: power log-mel and waveform stores for every clip of every subset."""

from pathlib import Path

import typer

from fsdlib.atomic import atomic_dir
from fsdlib.dataset import label_table, read_dataset
from fsdlib.features import build_feature_store
from fsdlib.paths import PATHS
from fsdlib.settings import PARAMS, DataSettings, FeatureSettings, Params
from stages.common import stage


@stage
def features(params: Path = typer.Option(PARAMS, help="params file"), out: Path = typer.Option(PATHS.features)) -> None:
    """Compute the feature store of all subsets, and the label table beside them."""
    p = Params.load(params)
    cfg = p.read(FeatureSettings, "features")
    dataset = read_dataset(p.read(DataSettings, "data").root)
    with atomic_dir(out) as tmp:
        for subset in dataset.subsets():
            items = list(zip(subset.fnames, subset.paths(), strict=True))
            build_feature_store(items, tmp / subset.name, cfg)
        label_table(dataset).to_parquet(tmp / "labels.parquet", index=False)
