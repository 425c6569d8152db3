"""Stage `export`: the submitted ensemble as one file for `fsd tag --model` (no repository, params or DVC needed)."""

from pathlib import Path

import typer

from fsdlib.export import export_ensemble
from fsdlib.paths import PATHS
from stages.common import PARAMS, load_params, stage
from stages.tagging import trained_tagger


@stage
def export(params: Path = typer.Option(PARAMS, help="params file"),
           out: Path = typer.Option(PATHS.tagger, help="the file to write")) -> None:
    """Write the submitted ensemble (the chosen snapshots, folded for inference) to one file."""
    tagger = trained_tagger(load_params(params), "submitted", "cpu", params)
    size = export_ensemble(out, tagger.ensemble)
    snapshots = sum(len(m.models) for m in tagger.members)
    print(f"{out}: {len(tagger.members)} models, {snapshots} snapshots, {size / 1e6:.1f} MB")
