"""Stages `teacher` and `pseudo_label`: the teacher's noisy-clip predictions, then sharpened soft labels."""

from pathlib import Path

import typer

from fsdlib.atomic import atomic_path
from fsdlib.fold_predictions import pseudo_label_tables, teacher_predictions, write_arrays
from fsdlib.paths import PATHS
from fsdlib.selection import describe, teacher_cycles
from fsdlib.settings import PARAMS, InferenceConfig, Params, SplSettings
from fsdlib.spec import ModelSpec
from stages.common import stage


@stage
def teacher(
    params: Path = typer.Option(PARAMS, help="params file"),
    device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda:N"),
) -> None:
    """Predict every noisy clip at full length with each teacher fold, the mean over its snapshots: all of them
    (spl.select fixed) or those chosen by the teacher's training OOF lwlrap (cv)."""
    p = Params.load(params)
    spl = p.read(SplSettings, "spl")
    name, folds = spl.teacher, p.folds()
    chosen = teacher_cycles(name, folds, spl.select)
    for k, c in chosen.items():
        print(f"teacher {name} fold {k}: {describe(c.cycles, c.pads)} (OOF lwlrap {c.cv:.4f} on the clips chosen on)")
    spec, cfg = p.read(ModelSpec, f"models.{name}"), p.read(InferenceConfig, "inference")
    write_arrays(PATHS.teacher, teacher_predictions(name, spec, folds, cfg, device,
                                                    cycles={k: c.cycles for k, c in chosen.items()}))


@stage
def pseudo_label(params: Path = typer.Option(PARAMS, help="params file")) -> None:
    """Sharpen the teacher's predictions (T = spl.temperature) into both variants' soft labels."""
    temperature = Params.load(params).read(SplSettings, "spl").temperature
    for variant, table in pseudo_label_tables(PATHS.teacher, temperature).items():
        with atomic_path(PATHS.pseudo_labels(variant)) as tmp:
            table.to_parquet(tmp, index=False)
        print(f"{variant}: {len(table)} soft labels, T = {temperature}")
