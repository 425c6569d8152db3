"""Stage `export`: the submitted ensemble for `fsd tag --model` (no repository, params or DVC needed): a torch file
and an ONNX graph."""

from pathlib import Path

import typer

from fsdlib.export import export_ensemble
from fsdlib.onnx_export import export_onnx
from fsdlib.paths import PATHS
from fsdlib.settings import PARAMS, Params
from stages.common import stage
from stages.tagging import trained_tagger


@stage
def export(params: Path = typer.Option(PARAMS, help="params file"),
           out: Path = typer.Option(PATHS.tagger, help="the torch file to write"),
           onnx_out: Path = typer.Option(PATHS.tagger_onnx, help="the ONNX file to write (its weights in <name>.data)"),
           ) -> None:
    """Write the submitted ensemble (the chosen snapshots, folded for inference) as a torch file and an ONNX graph."""
    tagger = trained_tagger(Params.load(params), "submitted", "cpu")
    snapshots = sum(len(m.models) for m in tagger.members)
    size = export_ensemble(out, tagger.ensemble)
    print(f"{out}: {len(tagger.members)} models, {snapshots} snapshots, {size / 1e6:.1f} MB")
    size = export_onnx(onnx_out, tagger.ensemble, external=True)
    print(f"{onnx_out}: the same as one ONNX graph, {size / 1e6:.1f} MB with its weights")
