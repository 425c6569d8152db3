"""The `fsd` command: one subcommand per pipeline stage (dvc.yaml runs these)."""

import typer

from stages.features import features
from stages.folds import folds
from stages.synth import synth
from stages.train import train

app = typer.Typer(help="fsdlib: FSDKaggle2019 audio tagging pipeline stages", no_args_is_help=True)
app.command()(synth)
app.command()(features)
app.command()(folds)
app.command()(train)

if __name__ == "__main__":
    app()
