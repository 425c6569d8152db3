"""The distilled network (fsdlib/distill.py): what it learns from, what it never sees, and what it exports."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pipeline import run

from fsdlib.distill import StoreChain, distill, open_distill_set
from fsdlib.errors import FsdError
from fsdlib.export import load_ensemble
from fsdlib.paths import Paths
from fsdlib.settings import build
from fsdlib.spec import DistillSettings
from fsdlib.store import FeatureStore, StoreWriter
from fsdlib.tagger import Tagger, load_tagger


def write_store(path: Path, arrays: list[np.ndarray], prefix: str) -> FeatureStore:
    with StoreWriter(path, "logmel", np.float32, arrays[0].shape[1]) as writer:
        writer.write([f"{prefix}{i}" for i in range(len(arrays))], arrays)
    return FeatureStore.open(path)


def test_store_chain_reads_each_store_in_turn(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    first = [rng.random((n, 3), dtype=np.float32) for n in (2, 5)]
    second = [rng.random((n, 3), dtype=np.float32) for n in (4, 1, 3)]
    chain = StoreChain([write_store(tmp_path / "a.arrow", first, "a"), write_store(tmp_path / "b.arrow", second, "b")])
    assert len(chain) == 5 and chain.fnames == ["a0", "a1", "b0", "b1", "b2"]
    assert chain.lengths.tolist() == [2, 5, 4, 1, 3]
    for got, want in zip((chain[i] for i in range(5)), first + second, strict=True):
        np.testing.assert_array_equal(got, want)
    assert chain.paths == (tmp_path / "a.arrow", tmp_path / "b.arrow")


def pipeline_copy(src: Path, dest: Path) -> Paths:
    """The inputs of the distill stage (features, folds, exported ensemble) copied, to change without harm."""
    shutil.copytree(src / "data/features", dest / "data/features")
    shutil.copy(src / "data/folds.parquet", dest / "data/folds.parquet")
    shutil.copy(src / "data/tagger.pt", dest / "data/tagger.pt")
    return Paths(dest)


def test_targets_are_the_ensembles_predictions_in_clip_order(tiny_pipeline: Path) -> None:
    """The test clips' targets are what the submitted ensemble scored them (submission.csv): the chained stores
    and the targets line up clip by clip."""
    paths = Paths(tiny_pipeline)
    data = open_distill_set(load_tagger(paths.tagger, "cpu"), ["curated", "noisy", "test"], "ensemble", paths,
                            progress=False)
    submission = pd.read_csv(paths.submission).set_index("fname")
    n_test = data.counts["test"]
    test_names = data.clips["logmel"].fnames[-n_test:]
    np.testing.assert_allclose(data.targets[-n_test:], submission.loc[test_names].to_numpy(), atol=1e-5)
    assert data.clips["logmel"].fnames == data.clips["wave"].fnames
    assert sum(data.counts.values()) == len(data.targets) == len(data.clips["logmel"])
    assert (data.folds[data.counts["curated"]:] == -1).all()
    labelled = open_distill_set(load_tagger(paths.tagger, "cpu"), ["curated", "noisy"], "labels", paths,
                                progress=False)
    n_cur = labelled.counts["curated"]
    np.testing.assert_array_equal(labelled.targets[:n_cur], labelled.truth[:n_cur])
    np.testing.assert_array_equal(labelled.targets[n_cur:], data.targets[n_cur:len(labelled.targets)])
    assert not np.array_equal(data.targets[:n_cur], labelled.targets[:n_cur])


def test_the_stage_trains_without_the_held_out_fold_and_exports_one_network(tiny_pipeline: Path) -> None:
    paths = Paths(tiny_pipeline)
    metrics = json.loads((paths.metrics / "distill.json").read_text())
    folds = pd.read_parquet(paths.folds)
    held_out = set(folds[(folds["subset"] == "curated") & (folds["fold"] == metrics["holdout_fold"])]["fname"])
    oof = np.load(paths.distill / "oof.npz")
    assert set(oof["fnames"].tolist()) == held_out
    assert set(metrics["test"]) == {"distilled", "ensemble"} and 0 < metrics["test"]["distilled"] <= 1
    exported = load_ensemble(paths.distilled_tagger)
    assert [m.name for m in exported.members] == ["distilled"] and len(exported.members[0].models) == 1
    assert torch.load(paths.distilled_tagger, weights_only=True)["members"][0]["weight"] == 1.0


def test_tagging_with_the_distilled_file_from_elsewhere(tiny_pipeline: Path, tmp_path: Path) -> None:
    """`fsd tag --model` with a copy of the distilled ONNX file, outside any repository (onnxruntime, no torch): every
    class score is what the Python API's torch tagger of the distilled torch file gives the same clip."""
    model = tmp_path / "model.onnx"
    shutil.copy(tiny_pipeline / "data/tagger_distilled.onnx", model)
    clip = next((tiny_pipeline / "data/demo/test").glob("*.wav"))
    tagger = load_tagger(tiny_pipeline / "data/tagger_distilled.pt", "cpu")
    classes = tagger.classes
    proc = run(["fsd", "tag", "--model", str(model), str(clip), "--format", "csv", "--device", "cpu", "--top-k",
                str(len(classes))], tmp_path)
    tags = pd.read_csv(io.StringIO(proc.stdout))
    assert list(tags.columns) == ["file", "rank", "label", "score", "error"] and tags["error"].isna().all()
    assert set(tags["file"]) == {str(clip)} and tags["rank"].tolist() == list(range(1, len(classes) + 1))
    assert tags["score"].is_monotonic_decreasing and sorted(tags["label"]) == sorted(classes)
    expected = tagger.scores([clip]).iloc[0]
    np.testing.assert_allclose(tags.set_index("label").loc[classes, "score"].to_numpy(), expected[classes].to_numpy(),
                               atol=1e-4)
    assert expected.max() - expected.min() > 1e-3  # scores that tell the classes apart


def test_the_test_labels_never_reach_the_distilled_network(tiny_pipeline: Path, tmp_path: Path) -> None:
    """Scramble the test clips' labels: the targets, the split and the trained weights do not change."""
    paths = pipeline_copy(tiny_pipeline, tmp_path / "copy")
    table = pd.read_parquet(paths.labels)
    classes = table.columns[3:]
    test = table["subset"] == "test"
    table.loc[test, classes] = 1.0 - table.loc[test, classes].to_numpy()
    table.to_parquet(paths.labels)
    settings = build(DistillSettings, {"model": {
        "family": "resnet", "crop": 32, "batch": 8, "cycles": 1, "epochs_per_cycle": 1, "multitask": False,
        "arch": {"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "hidden": 16}}}, "distill")
    tagger = Tagger(load_ensemble(paths.tagger), "cpu")
    scrambled = distill(tagger, settings, paths, "cpu", progress=False)
    original = pipeline_copy(tiny_pipeline, tmp_path / "original")
    kept = distill(tagger, settings, original, "cpu", progress=False)
    assert scrambled["holdout"] == kept["holdout"]
    weights = [torch.load(p / "snapshot_1.pt", weights_only=True) for p in (paths.distill, original.distill)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert scrambled["test"]["ensemble"] != kept["test"]["ensemble"]  # the scores do read the (scrambled) labels


def test_settings_the_distilled_network_cannot_use_are_refused(tiny_pipeline: Path, tmp_path: Path) -> None:
    plain = {"family": "resnet", "multitask": False}
    for values, words in [
        ({"model": {"family": "resnet", "multitask": True}}, "distill: model: .*multitask, spl and init_from must be off"),
        ({"model": plain, "subsets": ["noisy", "test"]}, "distill.subsets must be curated and any of"),
        ({"model": plain, "curated_targets": "teacher"}, "distill.curated_targets must be labels or ensemble"),
        ({"model": {"family": "resnet", "layers": 3}}, "distill.model: unknown keys"),
        ({"subsets": ["curated"]}, "distill: missing keys \\['model'\\]"),
    ]:
        with pytest.raises(FsdError, match=words):
            build(DistillSettings, values, "distill")
    paths = pipeline_copy(tiny_pipeline, tmp_path / "copy")
    tagger = Tagger(load_ensemble(paths.tagger), "cpu")
    settings = build(DistillSettings, {"model": plain, "subsets": ["curated"], "holdout_fold": 7}, "distill")
    with pytest.raises(FsdError, match="fold 7 does not exist"):  # a fact of the data, checked where it is read
        distill(tagger, settings, paths, "cpu", progress=False)
