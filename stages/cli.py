"""The `fsd` command: one subcommand per pipeline stage (dvc.yaml runs these)."""

import typer

from stages.ensemble import ensemble
from stages.features import features
from stages.folds import folds
from stages.predict import predict
from stages.pseudo_label import pseudo_label, teacher
from stages.synth import synth
from stages.tag import tag
from stages.train import train

app = typer.Typer(help="fsdlib: FSDKaggle2019 audio tagging pipeline stages", no_args_is_help=True)
app.command()(synth)
app.command()(features)
app.command()(folds)
app.command()(train)
app.command()(teacher)
app.command(name="pseudo-label")(pseudo_label)
app.command()(predict)
app.command()(ensemble)
app.command()(tag)

if __name__ == "__main__":
    app()
