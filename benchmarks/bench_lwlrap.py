"""Speed of `fsdlib.metrics.lwlrap` against a straightforward per-clip loop and scikit-learn.

Multi-label: 5,000 clips x 80 classes with one to three true labels, vs a per-clip Python loop that ranks each
clip's scores (ties counted pessimistically, as the metric does). Single-label: lwlrap then equals scikit-learn's
label_ranking_average_precision_score (every clip has one pair, so the label weighting changes nothing).

    .venv/bin/python benchmarks/bench_lwlrap.py [--clips 5000] [--classes 80] [--repeats 5]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import header, table, timed
from sklearn.metrics import label_ranking_average_precision_score

from fsdlib.metrics import lwlrap


def loop_lwlrap(truth: np.ndarray, scores: np.ndarray) -> float:
    """The definition, clip by clip: for each true label, the share of true labels ranked at or above it."""
    precisions = []
    for t, s in zip(truth > 0.5, scores, strict=True):
        for label in np.flatnonzero(t):
            at_or_above = s >= s[label]
            precisions.append(np.count_nonzero(at_or_above & t) / np.count_nonzero(at_or_above))
    return float(np.mean(precisions))


def data(n: int, c: int, max_labels: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot truth (1..max_labels labels per clip) and scores that favour the true labels, with some ties."""
    truth = np.zeros((n, c), dtype=np.float32)
    for row in truth:
        row[rng.choice(c, size=rng.integers(1, max_labels + 1), replace=False)] = 1.0
    scores = np.round(rng.random((n, c)) + 0.5 * truth, 3).astype(np.float32)
    return truth, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each (the fastest is kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(header(f"bench_lwlrap: {args.clips:,} clips x {args.classes} classes"))

    rng = np.random.default_rng(args.seed)
    rows = []
    for case, max_labels in (("multi-label (1-3)", 3), ("single-label", 1)):
        truth, scores = data(args.clips, args.classes, max_labels, rng)
        candidates = {"fsdlib.metrics.lwlrap": lambda t=truth, s=scores: lwlrap(t, s),
                      "per-clip Python loop": lambda t=truth, s=scores: loop_lwlrap(t, s)}
        if max_labels == 1:
            candidates["sklearn LRAP"] = lambda t=truth, s=scores: label_ranking_average_precision_score(t, s)
        values = {name: fn() for name, fn in candidates.items()}
        seconds = {name: timed(fn, 1, args.repeats) for name, fn in candidates.items()}
        ours = seconds["fsdlib.metrics.lwlrap"]
        for name in candidates:
            rows.append([case, name, f"{values[name]:.6f}", 1e3 * seconds[name], f"{seconds[name] / ours:.1f}x"])
        spread = max(values.values()) - min(values.values())
        if spread > 1e-6:
            raise SystemExit(f"{case}: the implementations disagree by {spread:.2g}")

    print(table(["case", "implementation", "value", "ms (best)", "time / fsdlib"], rows))


if __name__ == "__main__":
    main()
