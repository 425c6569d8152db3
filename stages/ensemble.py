"""Stage `ensemble`: snapshot selection per model, weighted average across models, fitted weights beside them,
submission, metrics, plots."""

from pathlib import Path

import typer

from fsdlib.ensemble_outputs import report_ensemble, selection_summary, summary
from stages.common import PARAMS, load_params, section, stage


@stage
def ensemble(params: Path = typer.Option(PARAMS, help="params file")) -> None:
    """Choose each model's snapshots and pads, combine the models' predictions; write the submission, metrics and
    plots."""
    cfg = section(load_params(params), "ensemble", params)
    fixed = {str(k): float(v) for k, v in cfg["weights"].items()}
    metrics, selection = report_ensemble(fixed, cfg.get("submit", "fixed"), cfg.get("select", "fixed"),
                                         fit_over=cfg.get("fit_over", "weighted"))
    print(summary(metrics))
    print(selection_summary(selection))
