"""Stage `synth`: write the demo dataset, an FSDKaggle2019-layout root, from params `synth`."""

from pathlib import Path

import typer

from fsdlib.paths import PATHS
from fsdlib.settings import PARAMS, Params
from fsdlib.synth import SynthConfig, generate_demo
from stages.common import stage


@stage
def synth(params: Path = typer.Option(PARAMS, help="params file"), out: Path = typer.Option(PATHS.demo)) -> None:
    """Generate the demo dataset."""
    generate_demo(out, Params.load(params).read(SynthConfig, "synth"))
