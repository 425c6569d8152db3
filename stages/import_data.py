"""Command `fsd import`: one's own labelled audio (class folders or a CSV) as a dataset root the pipeline reads."""

from pathlib import Path

import typer

from fsdlib.errors import FsdError
from fsdlib.importer import Clip, clips_from_audio, clips_from_csv, clips_from_folders, make_plan, write_root
from fsdlib.progress import print_table
from stages.common import stage


def _source(path: Path, audio_dir: Path | None, filename_column: str, label_column: str, separator: str,
            split_column: str | None) -> list[Clip]:
    """Clips of a class-folder tree (a folder) or of a CSV (a file)."""
    if path.is_dir():
        return clips_from_folders(path)
    if path.is_file():
        return clips_from_csv(path, audio_dir, filename_column, label_column, separator, split_column)
    raise FsdError("source not found (a folder of class folders, or a CSV)", path)


@stage
def import_data(
    source: Path = typer.Argument(..., help="a folder with one folder per class, or a CSV of file names and labels"),
    dest: Path = typer.Argument(..., help="the new dataset root to write (must not exist, or be empty)"),
    noisy: Path | None = typer.Option(None, help="a second source (folder or CSV) whose labels are noisy"),
    test_audio: Path | None = typer.Option(None, help="a folder of unlabelled test audio (else a labelled split)"),
    test_fraction: float = typer.Option(0.2, help="share of the labelled clips held out as the test part"),
    split_column: str | None = typer.Option(None, help="CSV column saying train or test per row"),
    filename_column: str = typer.Option("fname", help="CSV column of file names"),
    label_column: str = typer.Option("labels", help="CSV column of labels"),
    separator: str = typer.Option(",", help="separator of several labels in the label column"),
    audio_dir: Path | None = typer.Option(None, help="folder the CSV's file names are relative to (default: its own)"),
    noisy_audio_dir: Path | None = typer.Option(None, help="the same for a noisy CSV"),
    classes: str | None = typer.Option(None, help="class order, comma-separated (default: sorted labels)"),
    public_fraction: float = typer.Option(0.25, help="share of labelled test clips marked Public"),
    seed: int = typer.Option(0, help="seed of the test split and the Public/Private marks"),
) -> None:
    """Import labelled audio (WAV, FLAC, OGG/Vorbis, MP3) as 44.1 kHz 16-bit mono WAV in the pipeline's layout;
    then `dvc exp run -S data.root=DEST`."""
    curated = _source(source, audio_dir, filename_column, label_column, separator, split_column)
    noisy_clips = _source(noisy, noisy_audio_dir, filename_column, label_column, separator, None) if noisy else []
    test = clips_from_audio(test_audio) if test_audio else []
    order = [c.strip() for c in classes.split(",")] if classes else None
    plan = make_plan(curated, noisy_clips, test, test_fraction, seed, order)
    table = write_root(plan, dest, public_fraction, seed)
    print_table(table, f"{dest}: {len(plan.classes)} classes")
