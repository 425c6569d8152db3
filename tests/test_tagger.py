"""Tagging helpers: the ensemble's members from its weights file, and the table, CSV and JSON renderings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsdlib.atomic import write_json
from fsdlib.errors import FsdError
from fsdlib.paths import Paths
from fsdlib.spec import ModelSpec
from fsdlib.tagger import Tag, ensemble_members, render_tags

TAGS = [Tag(Path("a b.wav"), (("Bark", 0.91234567), ("Meow", 0.1))), Tag(Path("bad.wav"), error="truncated")]


def test_render_table_csv_and_json() -> None:
    assert render_tags(TAGS, "table") == "a b.wav\tBark 0.912  Meow 0.100\nbad.wav\terror: truncated\n"
    assert render_tags(TAGS, "csv").splitlines() == [
        "file,rank,label,score,error", '"a b.wav",1,Bark,0.912346,', '"a b.wav",2,Meow,0.100000,',
        '"bad.wav",,,,"truncated"']
    assert json.loads(render_tags(TAGS, "json")) == [
        {"file": "a b.wav", "labels": [{"label": "Bark", "score": 0.912346}, {"label": "Meow", "score": 0.1}]},
        {"file": "bad.wav", "error": "truncated"}]
    with pytest.raises(FsdError, match="format must be table or csv or json"):
        render_tags(TAGS, "xml")


def test_ensemble_members_positive_weights_and_snapshots_of_all_folds(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    specs = {"A": ModelSpec(family="resnet", cycles=3, snapshot_cycles=(2, 3)), "D": ModelSpec(family="envnet")}
    with pytest.raises(FsdError, match="run `dvc repro` first"):
        ensemble_members("fixed", specs.__getitem__, [0, 1], paths)
    write_json(paths.ensemble_weights, {"fixed": {"A": 0.75, "D": 0.25, "B": 0.0}, "fitted": {"A": 1.0, "D": 0.0}})
    for name in specs:
        for fold in (0, 1):
            paths.fold_dir(name, fold).mkdir(parents=True)
            for c in (1, 2, 3):
                (paths.fold_dir(name, fold) / f"snapshot_{c}.pt").write_bytes(b"")
    members = ensemble_members("fixed", specs.__getitem__, [0, 1], paths)
    assert [(m.name, m.weight) for m in members] == [("A", 0.75), ("D", 0.25)]
    assert [p.relative_to(paths.models).as_posix() for p in members[0].snapshots] == [
        "A/fold0/snapshot_2.pt", "A/fold0/snapshot_3.pt", "A/fold1/snapshot_2.pt", "A/fold1/snapshot_3.pt"]
    assert len(members[1].snapshots) == 6
    assert [m.name for m in ensemble_members("fitted", specs.__getitem__, [0], paths)] == ["A"]


def test_ensemble_members_use_the_chosen_snapshots_pads_and_submitted_weights(tmp_path: Path) -> None:
    """Tagging uses what the ensemble stage chose (ensemble.select: cv) and submitted, so tags match the submission."""
    paths = Paths(tmp_path)
    specs = {"A": ModelSpec(family="resnet", cycles=3, tta_pads=(8, 32)), "D": ModelSpec(family="envnet")}
    write_json(paths.ensemble_weights, {"fixed": {"A": 0.5, "D": 0.5}, "fitted": {"A": 1.0, "D": 0.0},
                                        "submit": "fitted", "snapshots": {"A": {"cycles": [3], "pads": [32]}}})
    for name in specs:
        paths.fold_dir(name, 0).mkdir(parents=True)
        for c in (1, 2, 3):
            (paths.fold_dir(name, 0) / f"snapshot_{c}.pt").write_bytes(b"")
    (member,) = ensemble_members("submitted", specs.__getitem__, [0], paths)
    assert (member.name, member.weight, member.pads) == ("A", 1.0, (32,))
    assert [p.name for p in member.snapshots] == ["snapshot_3.pt"]
    fixed = ensemble_members("fixed", specs.__getitem__, [0], paths)
    assert [len(m.snapshots) for m in fixed] == [1, 3] and fixed[1].pads == ()
