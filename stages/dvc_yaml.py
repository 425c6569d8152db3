"""Command `fsd dvc-yaml`: print, write (--write) or check (--check) dvc.yaml as fsdlib.dvc_yaml generates it."""

from pathlib import Path

import typer

from fsdlib.atomic import write_text
from fsdlib.dvc_yaml import DVC_YAML, differences, render
from fsdlib.errors import FsdError
from stages.common import stage


@stage
def dvc_yaml(write: bool = typer.Option(False, "--write", help="rewrite dvc.yaml (atomically)"),
             check: bool = typer.Option(False, "--check", help="exit 1, naming the differences, if dvc.yaml is stale"),
             root: Path = typer.Option(Path("."), help="repository root")) -> None:
    """Generate dvc.yaml: code deps from each stage command's imports, model lists from params.yaml."""
    if write and check:
        raise FsdError("--write and --check exclude each other")
    path = root / DVC_YAML
    generated = render(root)
    if check:
        current = path.read_text(encoding="utf-8") if path.is_file() else ""
        if current != generated:
            raise FsdError("differs from what `fsd dvc-yaml` generates (run `fsd dvc-yaml --write`):\n"
                           + differences(current, generated), path)
        print(f"{path}: up to date")
    elif write:
        write_text(path, generated)
        print(f"{path}: written")
    else:
        print(generated, end="")
