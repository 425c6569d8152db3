"""Stage `distill`: one fast network trained on the submitted ensemble's predictions, exported for `fsd tag`."""

from pathlib import Path

import typer

from fsdlib.atomic import write_json
from fsdlib.device import resolve_device
from fsdlib.distill import distill as distill_network
from fsdlib.distill import summary
from fsdlib.export import load_ensemble
from fsdlib.onnx_tagger import load_onnx_tagger
from fsdlib.paths import PATHS
from fsdlib.progress import print_table
from fsdlib.settings import PARAMS, Params
from fsdlib.spec import DistillSettings
from fsdlib.tagger import Tagger
from stages.common import stage


@stage
def distill(params: Path = typer.Option(PARAMS, help="params file"),
            device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda:N"),
            progress: bool = typer.Option(True, help="show progress bars")) -> None:
    """Train `distill.model` on the ensemble's predictions of `distill.subsets`; write data/tagger_distilled.pt,
    data/tagger_distilled.onnx and metrics/distill.json."""
    settings = Params.load(params).read(DistillSettings, "distill")
    tagger = Tagger(load_ensemble(PATHS.tagger), device)
    # on a CPU the exported ONNX graph of the same ensemble predicts the targets at twice torch's speed
    targets_by = load_onnx_tagger(PATHS.tagger_onnx) if resolve_device(device).type == "cpu" else None
    metrics = distill_network(tagger, settings, device=device, progress=progress, targets_by=targets_by)
    write_json(PATHS.metrics / "distill.json", metrics)
    clips = ", ".join(f"{n} {subset}" for subset, n in metrics["clips"].items())
    print_table(summary(metrics), f"distilled network vs the submitted ensemble (learnt from {clips} clips)")
