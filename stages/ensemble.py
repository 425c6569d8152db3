"""Stage `ensemble`: weighted average across models, fitted weights beside them, submission, metrics, plots."""

from pathlib import Path

import typer

from fsdlib.report import report_ensemble, summary
from stages.common import PARAMS, load_params, section, stage


@stage
def ensemble(params: Path = typer.Option(PARAMS, help="params file")) -> None:
    """Combine the models' predictions; write the submission, metrics and plots."""
    cfg = section(load_params(params), "ensemble", params)
    fixed = {str(k): float(v) for k, v in cfg["weights"].items()}
    print(summary(report_ensemble(fixed, cfg.get("submit", "fixed"))))
