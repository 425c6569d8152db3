"""Stages `teacher` and `pseudo_label`: the teacher's noisy-clip predictions, then sharpened soft labels."""

from pathlib import Path

import typer

from fsdlib.atomic import atomic_path
from fsdlib.fold_predictions import pseudo_label_tables, teacher_predictions, write_arrays
from fsdlib.paths import PATHS
from fsdlib.selection import describe, teacher_cycles
from stages.common import PARAMS, fold_ids, load_params, section, stage
from stages.settings import inference_config, model_spec


@stage
def teacher(
    params: Path = typer.Option(PARAMS, help="params file"),
    device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda:N"),
) -> None:
    """Predict every noisy clip at full length with each teacher fold, the mean over its snapshots: all of them
    (spl.select fixed) or those chosen by the teacher's training OOF lwlrap (cv)."""
    p = load_params(params)
    spl = section(p, "spl", params)
    name, folds = spl["teacher"], fold_ids(p, params)
    chosen = teacher_cycles(name, folds, spl.get("select", "fixed"))
    for k, c in chosen.items():
        print(f"teacher {name} fold {k}: {describe(c.cycles, c.pads)} (OOF lwlrap {c.cv:.4f} on the clips chosen on)")
    write_arrays(PATHS.teacher, teacher_predictions(name, model_spec(p, name, params), folds,
                                                    inference_config(p, params), device,
                                                    cycles={k: c.cycles for k, c in chosen.items()}))


@stage
def pseudo_label(params: Path = typer.Option(PARAMS, help="params file")) -> None:
    """Sharpen the teacher's predictions (T = spl.temperature) into both variants' soft labels."""
    temperature = float(section(load_params(params), "spl", params)["temperature"])
    for variant, table in pseudo_label_tables(PATHS.teacher, temperature).items():
        with atomic_path(PATHS.pseudo_labels(variant)) as tmp:
            table.to_parquet(tmp, index=False)
        print(f"{variant}: {len(table)} soft labels, T = {temperature}")
