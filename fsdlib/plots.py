"""Static PNG plots of per-class lwlrap, CV lwlrap per model and training curves (DVC's plot viewer needs internet).

Figures are built with matplotlib's object API on an Agg canvas: no display, no pyplot state to close.
Every PNG is written atomically.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fsdlib.atomic import atomic_path
from fsdlib.errors import FsdError

_DPI = 100


def plot_per_class(per_class: dict[str, np.ndarray], classes: Sequence[str], path: Path, title: str) -> None:
    """Horizontal bars of per-class lwlrap, one bar per series, classes sorted by the first series (best on top).

    NaN values (classes without positives) draw no bar and are marked "n/a".
    """
    if not per_class:
        raise FsdError("no per-class lwlrap series to plot", path)
    values = {name: np.asarray(v, dtype=np.float64) for name, v in per_class.items()}
    for name, v in values.items():
        if v.shape != (len(classes),):
            raise FsdError(f"per-class lwlrap of {name!r} has shape {v.shape}, expected ({len(classes)},)", path)
    first = next(iter(values.values()))
    order = np.argsort(np.where(np.isnan(first), np.inf, -first), kind="stable")
    n_series = len(values)
    bar = 0.8 / n_series
    fig = _figure(9.0, max(3.0, 1.5 + len(classes) * (0.12 + 0.08 * n_series)))
    ax = fig.add_subplot()
    y = np.arange(len(classes))
    for k, (name, v) in enumerate(values.items()):
        pos = y + (k - (n_series - 1) / 2) * bar
        vals = v[order]
        ax.barh(pos, np.nan_to_num(vals, nan=0.0), height=bar, label=name, color=f"C{k % 10}")
        for p in pos[np.isnan(vals)]:
            ax.text(0.005, p, "n/a", va="center", fontsize=7, color="0.4")
    ax.set_yticks(y, [classes[i] for i in order], fontsize=8)
    ax.set_ylim(len(classes) - 0.5, -0.5)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("lwlrap")
    ax.set_ylabel("class")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8)
    _save(fig, path)


def plot_cv_per_model(scores: dict[str, float], path: Path, title: str, reference: dict[str, float] | None = None,
                      reference_label: str = "reference") -> None:
    """Bars of CV lwlrap per model and ensemble with their values; reference values (e.g. the paper's, or every
    snapshot's average beside the chosen snapshots') as markers labelled `reference_label`.

    Reference names without a score get a column with only the marker.
    """
    reference = reference or {}
    names = list(scores) + [name for name in reference if name not in scores]
    if not names:
        raise FsdError("no CV scores to plot", path)
    x = np.arange(len(names))
    fig = _figure(max(5.0, 1.5 + 0.8 * len(names)), 4.5)
    ax = fig.add_subplot()
    heights = [scores.get(name, np.nan) for name in names]
    ax.bar(x, np.nan_to_num(heights, nan=0.0), width=0.6, color="C0", label="CV lwlrap")
    for i, h in enumerate(heights[: len(scores)]):
        if math.isnan(h):
            ax.text(i, 0.01, "n/a", ha="center", va="bottom", fontsize=8, color="0.4")
        elif h >= 0.1:  # inside the bar's top, clear of reference markers above it
            ax.text(i, h - 0.01, f"{h:.3f}", ha="center", va="top", fontsize=8, color="white")
        else:
            ax.text(i, h + 0.01, f"{h:.3f}", ha="center", va="bottom", fontsize=8)
    ref = [(i, reference[name]) for i, name in enumerate(names) if name in reference]
    if ref:
        rx, ry = zip(*ref, strict=True)
        ax.plot(rx, ry, linestyle="none", marker="D", color="C3", label=reference_label)
        for i, value in ref:
            ax.annotate(f"{value:.3f}", (i, value), xytext=(8, -3), textcoords="offset points", fontsize=7, color="C3")
    ax.set_xticks(x, names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("model / ensemble")
    ax.set_ylabel("CV lwlrap (out-of-fold)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_training_curves(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> None:
    """One subplot per metric (e.g. "train/total", "val/lwlrap", "lr"), one line per model; log y for learning rates.

    curves: model (or "model/fold") name -> metric name -> [(step, value)].
    """
    metrics = sorted({metric for per_model in curves.values() for metric, points in per_model.items() if points})
    if not metrics:
        raise FsdError("no training curves to plot", path)
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = _figure(5.0 * ncols + 2.0, 3.5 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = {name: f"C{k % 10}" if len(curves) <= 10 else colormaps["tab20"](k % 20) for k, name in enumerate(curves)}
    for ax, metric in zip(axes, metrics, strict=False):
        values: list[float] = []
        for name, per_model in curves.items():
            points = per_model.get(metric, [])
            if points:
                steps, vals = zip(*points, strict=True)
                ax.plot(steps, vals, label=name, color=colors[name], linewidth=1.0)
                values.extend(vals)
        if _is_lr(metric) and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.set_ylabel(metric.rsplit("/", 1)[-1])
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_axis_off()
    handles, labels = [], []
    for ax in axes[: len(metrics)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.suptitle("Training curves")
    _save(fig, path)


def read_dvclive_curves(live_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Metric name ("train/total", "val/lwlrap", "lr") -> [(step, value)] from dvclive's plots/metrics/**/*.tsv."""
    metrics_dir = Path(live_dir) / "plots" / "metrics"
    if not metrics_dir.is_dir():
        raise FsdError("no dvclive metrics directory (plots/metrics)", live_dir)
    curves: dict[str, list[tuple[int, float]]] = {}
    for tsv in sorted(metrics_dir.rglob("*.tsv")):
        name = tsv.relative_to(metrics_dir).with_suffix("").as_posix()
        curves[name] = _read_tsv(tsv)
    return curves


def mean_curves(live_dirs: Sequence[Path]) -> dict[str, list[tuple[int, float]]]:
    """The mean over dvclive directories (a model's folds) of each metric, by step."""
    per_metric: dict[str, dict[int, list[float]]] = {}
    for live in live_dirs:
        for metric, points in read_dvclive_curves(live).items():
            for step, value in points:
                per_metric.setdefault(metric, {}).setdefault(step, []).append(value)
    return {m: [(s, float(np.mean(v))) for s, v in sorted(d.items())] for m, d in per_metric.items()}


def _read_tsv(tsv: Path) -> list[tuple[int, float]]:
    """(step, value) rows of one dvclive TSV, columns found by header name (an optional timestamp is ignored)."""
    with tsv.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        header = reader.fieldnames or []
        value_cols = [c for c in header if c not in ("step", "timestamp")]
        if "step" not in header or len(value_cols) != 1:
            raise FsdError(f"expected columns step, <metric> and optionally timestamp, found {header}", tsv)
        col = value_cols[0]
        try:
            return [(int(row["step"]), float(row[col])) for row in reader]
        except (TypeError, ValueError) as e:
            raise FsdError(f"unreadable row: {e}", tsv) from e


def _is_lr(metric: str) -> bool:
    """Whether a metric is a learning rate ("lr", "opt/lr", "lr_head"), plotted on a log scale."""
    leaf = metric.rsplit("/", 1)[-1]
    return leaf == "lr" or leaf.startswith("lr_") or leaf.endswith("_lr")


def _figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas, laid out with constrained layout."""
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    """Write the figure as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
