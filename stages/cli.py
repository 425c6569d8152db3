"""The `fsd` command: one subcommand per pipeline stage (dvc.yaml runs these).

Subcommands are imported only when run, so a light stage (synth, folds) does not pay for torch or matplotlib.
"""

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

COMMANDS = {
    "synth": "stages.synth:synth",
    "features": "stages.features:features",
    "folds": "stages.folds:folds",
    "train": "stages.train:train",
    "teacher": "stages.pseudo_label:teacher",
    "pseudo-label": "stages.pseudo_label:pseudo_label",
    "predict": "stages.predict:predict",
    "ensemble": "stages.ensemble:ensemble",
    "report": "stages.report:report",
    "export": "stages.export:export",
    "distill": "stages.distill:distill",
    "tag": "stages.tag:tag",
    "import": "stages.import_data:import_data",
    "dvc-yaml": "stages.dvc_yaml:dvc_yaml",
}


class LazyStages(TyperGroup):
    """A click group that imports a stage's module when the stage is invoked (or its help is shown)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in COMMANDS:
            return None
        module, function = COMMANDS[name].split(":")
        single = typer.Typer(add_completion=False)
        single.command(name=name)(getattr(importlib.import_module(module), function))
        return typer.main.get_command(single)


app = LazyStages(name="fsd", help="fsdlib: FSDKaggle2019 audio tagging pipeline stages")

if __name__ == "__main__":
    app()
