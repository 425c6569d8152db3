"""Stage `features`: power log-mel and waveform stores for every clip of every subset."""

from pathlib import Path

import typer

from fsdlib.atomic import atomic_dir
from fsdlib.dataset import label_table, read_dataset
from fsdlib.features import LogMelConfig, build_feature_store
from stages.common import PARAMS, build, load_params, section, stage

OUT = Path("data/features")


@stage
def features(params: Path = typer.Option(PARAMS, help="params file"), out: Path = typer.Option(OUT)) -> None:
    """Compute the feature store of all subsets."""
    p = load_params(params)
    values = dict(section(p, "features", params))
    batch_seconds = values.pop("batch_seconds", 60.0)
    cfg = build(LogMelConfig, values, "features", params)
    dataset = read_dataset(section(p, "data", params)["root"])
    with atomic_dir(out) as tmp:
        for subset in dataset.subsets():
            items = list(zip(subset.fnames, subset.paths(), strict=True))
            build_feature_store(items, tmp / subset.name, cfg, batch_seconds=batch_seconds)
        label_table(dataset).to_parquet(tmp / "labels.parquet", index=False)
