"""Command `fsd tag`: top-k labels of audio files (WAV, FLAC, OGG, MP3) or folders with the trained ensemble."""

import sys
from enum import StrEnum
from pathlib import Path

import typer

from fsdlib.atomic import write_text
from fsdlib.errors import FsdError
from fsdlib.settings import PARAMS, Params
from fsdlib.tagger_file import open_tagger_file
from fsdlib.tags import expand_paths, render_tags
from stages.common import stage


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class Weights(StrEnum):
    submitted = "submitted"
    fixed = "fixed"
    fitted = "fitted"


@stage
def tag(
    paths: list[Path] = typer.Argument(..., help="audio files or folders (searched for .wav, .flac, .ogg, .mp3)"),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="labels per file"),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table, csv or json"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write here instead of stdout"),
    weights: Weights = typer.Option(Weights.submitted, help="ensemble weights: as submitted, fixed or fitted"),
    model: Path | None = typer.Option(None, "--model", "-m", help="an exported tagger file (`fsd export`): .onnx runs on "
                                      "onnxruntime without torch, .pt on torch (CPU or GPU); default: the trained "
                                      "ensemble of the repository in the current folder"),
    params: Path = typer.Option(PARAMS, help="params file (without --model)"),
    device: str = typer.Option("auto", help="torch device: auto (CUDA if present), cpu, cuda:N (ONNX files: the CPU)"),
    segment: float | None = typer.Option(None, min=0.05, help="tag windows of this many seconds (timestamps)"),
    hop: float | None = typer.Option(None, min=0.05, help="seconds between window starts (default: --segment)"),
) -> None:
    """Tag audio files with the trained ensemble; unreadable files are reported and skipped."""
    if model is not None:
        if weights != Weights.submitted:
            raise FsdError("--weights chooses among the repository's ensembles; an exported file (--model) holds the "
                           "submitted one only")
        tagger = open_tagger_file(model, device)
    else:
        from stages.tagging import trained_tagger  # the repository's stores and params: not needed with --model

        tagger = trained_tagger(Params.load(params), weights.value, device)
    files = expand_paths(paths)
    if not files:
        raise FsdError("no audio files (.wav, .flac, .ogg, .mp3) found in the given paths")
    if hop is not None and segment is None:
        raise FsdError("--hop needs --segment")
    tags = list(tagger.tag_windows(files, segment, hop or segment, top_k) if segment else
                tagger.tag_files(files, top_k))
    text = render_tags(tags, fmt.value)
    if output:
        write_text(output, text)
    else:
        sys.stdout.write(text)
    failed = [t for t in tags if t.error]
    for t in failed:
        print(f"error: {t.path}: {t.error}", file=sys.stderr)
    if failed:
        raise SystemExit(2 if any(not t.error for t in tags) else 1)  # 2: some tagged, 1: none
