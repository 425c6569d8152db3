"""Data assembly from the pipeline's layout: stores checked against the label table, folds, SPL targets, init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_root

from fsdlib.dataset import label_table, read_dataset, read_label_table
from fsdlib.errors import FsdError
from fsdlib.fold_data import fold_assignment, fold_data, init_snapshot, open_subset
from fsdlib.fold_predictions import pseudo_label_tables, write_arrays
from fsdlib.paths import Paths
from fsdlib.spec import ModelSpec
from fsdlib.store import StoreWriter

N_MELS = 4


def _store(path: Path, fnames: list[str]) -> None:
    with StoreWriter(path, "logmel", np.float32, N_MELS) as writer:
        writer.write(fnames, [np.full((3, N_MELS), i, np.float32) for i in range(len(fnames))])


@pytest.fixture
def layout(tmp_path: Path) -> Paths:
    """Label table, log-mel stores of curated and noisy clips, and two folds of each subset."""
    paths = Paths(tmp_path)
    dataset = read_dataset(make_root(tmp_path / "dataset", n_curated=8, n_noisy=6))
    paths.features.mkdir(parents=True)
    label_table(dataset).to_parquet(paths.labels, index=False)
    rows = []
    for subset in (dataset.curated, dataset.noisy):
        _store(paths.features / f"{subset.name}.logmel.arrow", list(subset.fnames))
        rows += [{"subset": subset.name, "fname": f, "fold": i % 2} for i, f in enumerate(subset.fnames)]
    pd.DataFrame(rows).to_parquet(paths.folds, index=False)
    return paths


def test_fold_data_splits_curated_clips_by_fold(layout: Paths) -> None:
    data, n_classes = fold_data(ModelSpec(family="resnet"), 1, layout)
    assert n_classes == 4
    np.testing.assert_array_equal(data.train_idx, [0, 2, 4, 6])
    np.testing.assert_array_equal(data.val_idx, [1, 3, 5, 7])
    assert data.noisy is not None and len(data.noisy_targets) == 6 and data.spl_targets is None
    single, _ = fold_data(ModelSpec(family="resnet", multitask=False), 0, layout)
    assert single.noisy is None
    with pytest.raises(FsdError, match="fold 2 does not exist"):
        fold_data(ModelSpec(family="resnet"), 2, layout)


def test_fold_data_soft_labels_of_the_student_fold(layout: Paths) -> None:
    spec = ModelSpec(family="resnet", spl={"variant": "leak_free"})
    with pytest.raises(FsdError, match="run the pseudo_label stage"):
        fold_data(spec, 0, layout)
    dataset = read_dataset(layout.root / "dataset")
    preds = np.random.default_rng(0).random((2, 6, 4))
    write_arrays(layout.teacher, {"fnames": np.array(dataset.noisy.fnames), "folds": np.array([0, 1]),
                                  "preds": preds, "classes": np.array(dataset.classes)})
    for variant, table in pseudo_label_tables(layout.teacher, 1.0).items():
        table.to_parquet(layout.pseudo_labels(variant), index=False)
    data, _ = fold_data(spec, 0, layout)
    expected = preds[0] / preds[0].sum(axis=1, keepdims=True)  # leak-free: teacher fold 0, sharpened at T = 1
    np.testing.assert_allclose(data.spl_targets, expected, rtol=1e-5)
    np.testing.assert_array_equal(data.spl_noisy_idx, [1, 3, 5])  # noisy clips of the validation fold left out


def test_open_subset_refuses_a_store_in_another_clip_order(layout: Paths) -> None:
    _, labels = read_label_table(layout.labels)
    store, targets = open_subset("curated", "logmel", labels, layout.features)
    assert store.fnames == list(labels["curated"].fnames) and targets.shape == (8, 4)
    _store(layout.features / "curated.logmel.arrow", list(reversed(labels["curated"].fnames)))
    with pytest.raises(FsdError, match="clip order differs"):
        open_subset("curated", "logmel", labels, layout.features)


def test_fold_assignment_names_a_clip_without_fold(layout: Paths) -> None:
    table = pd.read_parquet(layout.folds)
    fnames = list(table[table["subset"] == "noisy"]["fname"])
    np.testing.assert_array_equal(fold_assignment(table, "noisy", fnames, layout.folds), [0, 1, 0, 1, 0, 1])
    with pytest.raises(FsdError, match="'extra.wav' has no fold"):
        fold_assignment(table, "noisy", [*fnames, "extra.wav"], layout.folds)


def test_init_snapshot_is_the_last_of_the_same_fold(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert init_snapshot(ModelSpec(family="envnet"), 0, paths) is None
    for fold, cycles in ((0, (1, 2, 10)), (1, (1,))):
        paths.fold_dir("pre", fold).mkdir(parents=True)
        for c in cycles:
            (paths.fold_dir("pre", fold) / f"snapshot_{c}.pt").write_bytes(b"")
    student = ModelSpec(family="envnet", init_from="pre")
    assert init_snapshot(student, 0, paths) == paths.fold_dir("pre", 0) / "snapshot_10.pt"
    with pytest.raises(FsdError, match="no snapshots"):
        init_snapshot(student, 2, paths)
