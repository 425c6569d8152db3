"""Command `fsd tag`: top-k labels of WAV files or folders with the trained ensemble."""

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer

from fsdlib.atomic import write_text
from fsdlib.dataset import read_label_table
from fsdlib.errors import FsdError
from fsdlib.features import LogMelConfig
from fsdlib.predict import snapshot_paths
from fsdlib.tagger import Member, Tag, Tagger, expand_paths
from stages.common import PARAMS, build, load_params, section, stage
from stages.ensemble import WEIGHTS
from stages.predict import inference_config
from stages.train import FEATURES, MODELS, model_spec


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class Weights(StrEnum):
    fixed = "fixed"
    fitted = "fitted"


def _members(params: dict, path: Path, which: str) -> list[Member]:
    if not WEIGHTS.is_file():
        raise FsdError("no trained ensemble (run `dvc repro` first)", WEIGHTS)
    weights = json.loads(WEIGHTS.read_text())[which]
    folds = [int(k) for k in section(params, "folds", path)["ids"]]
    members = []
    for name, weight in weights.items():
        if weight > 0:
            spec = model_spec(params, name, path)
            snapshots = [p for k in folds for p in snapshot_paths(MODELS / name / f"fold{k}", spec.snapshot_cycles)]
            members.append(Member(name, spec, tuple(snapshots), float(weight)))
    return members


def _render(tags: list[Tag], fmt: Format) -> str:
    if fmt is Format.json:
        rows = [{"file": str(t.path), "error": t.error} if t.error else
                {"file": str(t.path), "labels": [{"label": c, "score": round(s, 6)} for c, s in t.labels]}
                for t in tags]
        return json.dumps(rows, indent=2) + "\n"
    if fmt is Format.csv:
        lines = ["file,rank,label,score,error"]
        for t in tags:
            if t.error:
                lines.append(f"\"{t.path}\",,,,\"{t.error}\"")
            lines += [f"\"{t.path}\",{r},{c},{s:.6f}," for r, (c, s) in enumerate(t.labels, 1)]
        return "\n".join(lines) + "\n"
    lines = []
    for t in tags:
        shown = f"error: {t.error}" if t.error else "  ".join(f"{c} {s:.3f}" for c, s in t.labels)
        lines.append(f"{t.path}\t{shown}")
    return "\n".join(lines) + "\n"


@stage
def tag(
    paths: list[Path] = typer.Argument(..., help="WAV files or folders (searched recursively for .wav)"),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="labels per file"),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table, csv or json"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write here instead of stdout"),
    weights: Weights = typer.Option(Weights.fixed, help="ensemble weights: params' fixed ones or OOF-fitted"),
    params: Path = typer.Option(PARAMS, help="params file"),
    device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda:N"),
) -> None:
    """Tag audio files with the trained ensemble; unreadable files are reported and skipped."""
    p = load_params(params)
    features = {k: v for k, v in section(p, "features", params).items() if k != "batch_seconds"}
    classes, _ = read_label_table(FEATURES / "labels.parquet")
    tagger = Tagger(_members(p, params, weights.value), classes, build(LogMelConfig, features, "features", params),
                    inference_config(p, params), device)
    files = expand_paths(paths)
    if not files:
        raise FsdError("no .wav files found in the given paths")
    tags = list(tagger.tag_files(files, top_k))
    text = _render(tags, fmt)
    if output:
        write_text(output, text)
    else:
        sys.stdout.write(text)
    failed = [t for t in tags if t.error]
    for t in failed:
        print(f"error: {t.path}: {t.error}", file=sys.stderr)
    if failed:
        raise SystemExit(1 if len(failed) == len(tags) else 2)
