"""Stage `ensemble`: snapshot selection per model, weighted average across models, fitted weights beside them,
submission, metrics, plots."""

from pathlib import Path

import typer

from fsdlib.ensemble_outputs import report_ensemble, selection_summary, summary
from fsdlib.settings import PARAMS, EnsembleSettings, Params
from stages.common import stage


@stage
def ensemble(params: Path = typer.Option(PARAMS, help="params file")) -> None:
    """Choose each model's snapshots and pads, combine the models' predictions; write the submission, metrics and
    plots."""
    cfg = Params.load(params).read(EnsembleSettings, "ensemble")
    metrics, selection = report_ensemble(cfg)
    print(summary(metrics))
    print(selection_summary(selection))
