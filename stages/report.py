"""Stage `report`: the paper's Tables 1-3 beside ours, recomputed from the stored predictions."""

from pathlib import Path

import typer

from fsdlib.paper_tables import write_paper_tables
from fsdlib.settings import PARAMS, Params
from stages.common import stage

PAPER_RESULTS = Path("params/paper_results.yaml")


@stage
def report(params: Path = typer.Option(PARAMS, help="params file"),
           results: Path = typer.Option(PAPER_RESULTS, help="the paper's figures, row by row")) -> None:
    """Write metrics/paper_tables.md and metrics/paper_tables.json."""
    models = Params.load(params).model_list("stage_models.predict")
    tables = write_paper_tables(results, models)
    done = sum(r["cv"] is not None for r in tables["rows"])
    print(f"paper tables: {done} of {len(tables['rows'])} rows computed (metrics/paper_tables.md)")
