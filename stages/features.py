"""Stage `features`: power log-mel and waveform stores for every clip of every subset."""

from pathlib import Path

import typer

from fsdlib.atomic import atomic_dir
from fsdlib.dataset import label_table, read_dataset
from fsdlib.features import LogMelConfig, build_feature_store
from fsdlib.paths import PATHS
from stages.common import PARAMS, load_params, section, stage


@stage
def features(params: Path = typer.Option(PARAMS, help="params file"), out: Path = typer.Option(PATHS.features)) -> None:
    """Compute the feature store of all subsets, and the label table beside them."""
    p = load_params(params)
    cfg = LogMelConfig.from_params(section(p, "features", params))
    batch_seconds = section(p, "features", params).get("batch_seconds", 60.0)
    wave_store = section(p, "features", params).get("wave_store", "copy")  # docs/method.md §2
    dataset = read_dataset(section(p, "data", params)["root"])
    with atomic_dir(out) as tmp:
        for subset in dataset.subsets():
            items = list(zip(subset.fnames, subset.paths(), strict=True))
            build_feature_store(items, tmp / subset.name, cfg, batch_seconds=batch_seconds, wave_store=wave_store)
        label_table(dataset).to_parquet(tmp / "labels.parquet", index=False)
