"""Static PNG plots and reading dvclive's metric TSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dvclive import Live

from fsdlib.errors import FsdError
from fsdlib.plots import mean_curves, plot_cv_per_model, plot_per_class, plot_training_curves, read_dvclive_curves
from fsdlib.vocabulary import CLASSES_80

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left behind


def test_plot_per_class_80_classes_with_nan(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    series = {name: rng.random(80) for name in ("ensemble", "A", "D")}
    series["ensemble"][[3, 40]] = np.nan
    series["A"][7] = np.nan
    path = tmp_path / "plots" / "per_class.png"
    plot_per_class(series, CLASSES_80, path, "Per-class lwlrap (OOF)")
    _assert_png(path)
    plot_per_class({"A": series["A"]}, CLASSES_80, path, "one series")
    _assert_png(path)
    with pytest.raises(FsdError, match="'A'"):
        plot_per_class({"A": np.zeros(5)}, CLASSES_80, path, "wrong length")


def test_plot_cv_per_model_with_reference(tmp_path: Path) -> None:
    path = tmp_path / "cv.png"
    scores = {"A": 0.85, "B": 0.87, "C": 0.84, "ensemble (paper weights)": 0.89, "ensemble (fitted)": float("nan")}
    plot_cv_per_model(scores, path, "CV lwlrap", reference={"A": 0.868, "B": 0.886, "A+B+C": 0.890})
    _assert_png(path)
    plot_cv_per_model({"A": 0.5}, path, "no reference")
    _assert_png(path)


def test_plot_training_curves_per_fold_lines_and_log_lr(tmp_path: Path) -> None:
    steps = range(0, 100, 10)
    curves = {
        f"{model}/fold{k}": {
            "train/total": [(s, 1.0 / (s + 1 + k)) for s in steps],
            "val/lwlrap": [(s, 0.5 + s / 250) for s in steps],
            "lr": [(s, 1e-3 * 0.9**s) for s in steps],
        }
        for model in ("A", "D")
        for k in range(5)
    }
    curves["E/fold0"] = {"train/total": [(0, 1.0), (10, 0.5)]}  # a model missing some metrics
    path = tmp_path / "curves.png"
    plot_training_curves(curves, path)
    _assert_png(path)
    with pytest.raises(FsdError):
        plot_training_curves({"A": {}}, path)


def test_read_dvclive_curves_from_real_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    live_dir = tmp_path / "live"
    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    for step in range(3):
        live.log_metric("train/total", 1.0 / (step + 1))
        live.log_metric("val/lwlrap", 0.5 + 0.1 * step)
        live.log_metric("lr", 1e-3 * 0.5**step)
        live.next_step()
    live.end()
    curves = read_dvclive_curves(live_dir)
    assert sorted(curves) == ["lr", "train/total", "val/lwlrap"]
    assert [s for s, _ in curves["val/lwlrap"]] == [0, 1, 2]
    assert curves["val/lwlrap"][2][1] == pytest.approx(0.7)
    assert curves["lr"][1] == (1, pytest.approx(5e-4))
    plot_training_curves({"A/fold0": curves}, tmp_path / "from_live.png")
    _assert_png(tmp_path / "from_live.png")


def test_read_dvclive_curves_timestamp_column_and_errors(tmp_path: Path) -> None:
    metrics = tmp_path / "live" / "plots" / "metrics"
    (metrics / "val").mkdir(parents=True)
    (metrics / "val" / "lwlrap.tsv").write_text("timestamp\tstep\tlwlrap\n1700000000\t0\t0.5\n1700000001\t1\t0.6\n")
    assert read_dvclive_curves(tmp_path / "live") == {"val/lwlrap": [(0, 0.5), (1, 0.6)]}
    (metrics / "bad.tsv").write_text("a\tb\tc\n1\t2\t3\n")
    with pytest.raises(FsdError, match="bad.tsv"):
        read_dvclive_curves(tmp_path / "live")
    with pytest.raises(FsdError, match="plots/metrics"):
        read_dvclive_curves(tmp_path / "missing")


def test_mean_curves_average_folds_by_step(tmp_path: Path) -> None:
    for k, rows in enumerate(("0\t1.0\n1\t0.5\n", "0\t3.0\n1\t1.5\n2\t1.0\n")):
        metrics = tmp_path / f"fold{k}" / "live" / "plots" / "metrics" / "train"
        metrics.mkdir(parents=True)
        (metrics / "total.tsv").write_text("step\ttotal\n" + rows)
    curves = mean_curves([tmp_path / f"fold{k}" / "live" for k in (0, 1)])
    assert curves == {"train/total": [(0, 2.0), (1, 1.0), (2, 1.0)]}
    assert mean_curves([]) == {}
