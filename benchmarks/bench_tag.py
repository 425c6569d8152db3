"""Tagging speed of a trained pipeline: cold start for one file and throughput on a folder, for the exported file
(`fsd tag --model data/tagger.pt`), the distilled network (`data/tagger_distilled.pt`, on the numpy engine and on
torch), the repository's ensemble, and the previous tagger in the same run.

The previous tagger (the reference) predicted each member with `fsdlib.predict.predict_snapshots`, which loads
every snapshot file again for every chunk of files; ours loads every model once (fsdlib/tagger.py, fsdlib/export.py).
Run it in a checkout where `dvc repro` has run (it needs data/models, data/ensemble.json, data/tagger.pt and
data/tagger_distilled.pt):

    .venv/bin/python benchmarks/bench_tag.py [--clips data/demo/test] [--repeats 3]

Cold start is timed twice: a whole `fsd tag` process (Python, torch and the models loaded, one file tagged) and,
inside one process, loading the tagger and tagging one file. Throughput is audio seconds per wall second.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml
from common import header, keep_freed_memory, table

from fsdlib.audio import read_any
from fsdlib.ensemble import weighted_average
from fsdlib.lite import load_numpy_tagger
from fsdlib.predict import predict_snapshots
from fsdlib.tagger import Tagger, ensemble_members, expand_paths, load_tagger
from stages.common import fold_ids
from stages.settings import model_spec
from stages.tagging import trained_tagger


def previous_predict(tagger: Tagger, members: list, waves: list[np.ndarray]) -> np.ndarray:
    """The tagger before models were loaded once: every snapshot file loaded again for this batch of files."""
    mels = [tagger.mel(w) for w in waves]
    preds = {m.name: predict_snapshots(m.spec, len(tagger.classes), m.snapshots, mels if m.spec.kind == "logmel"
                                       else waves, m.pads, tagger.inference, "cpu") for m in members}
    return weighted_average(preds, {m.name: m.weight for m in members}).astype(np.float32)


def best(fn, repeats: int) -> float:
    """The best wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=Path("data/demo/test"))
    parser.add_argument("--model", type=Path, default=Path("data/tagger.pt"))
    parser.add_argument("--distilled", type=Path, default=Path("data/tagger_distilled.pt"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()
    print(header("bench_tag: cold start and throughput of tagging"))
    files = expand_paths([args.clips])
    seconds = sum(sf.info(f).frames / sf.info(f).samplerate for f in files)
    params = yaml.safe_load(Path("params.yaml").read_text())
    members = ensemble_members("submitted", lambda n: model_spec(params, n), fold_ids(params))
    snapshots = sum(len(m.snapshots) for m in members)
    print(f"{len(files)} files, {seconds:.0f} s of audio; submitted ensemble: {len(members)} models, "
          f"{snapshots} snapshots; {torch.get_num_threads()} threads")

    fsd = str(Path(sys.executable).parent / "fsd")
    one = str(files[0])
    process = {
        "fsd tag --model (exported file)": best(lambda: subprocess.run(
            [fsd, "tag", "--model", str(args.model), one, "--device", "cpu"], check=True, capture_output=True),
            args.repeats),
        "fsd tag --model (distilled file: numpy engine, no torch)": best(lambda: subprocess.run(
            [fsd, "tag", "--model", str(args.distilled), one, "--device", "cpu"], check=True, capture_output=True),
            args.repeats),
        "fsd tag --model (distilled file, --engine torch)": best(lambda: subprocess.run(
            [fsd, "tag", "--model", str(args.distilled), one, "--device", "cpu", "--engine", "torch"], check=True,
            capture_output=True), args.repeats),
        "fsd tag (repository ensemble)": best(lambda: subprocess.run(
            [fsd, "tag", one, "--device", "cpu"], check=True, capture_output=True), args.repeats),
    }
    in_process = {
        "load exported file + tag 1 file": best(lambda: load_tagger(args.model, "cpu").tag_files([files[0]]).__next__(),
                                                args.repeats),
        "load distilled file + tag 1 file (numpy engine)": best(
            lambda: load_numpy_tagger(args.distilled).tag_files([files[0]]).__next__(), args.repeats),
        "load distilled file + tag 1 file (torch engine)": best(
            lambda: load_tagger(args.distilled, "cpu").tag_files([files[0]]).__next__(), args.repeats),
        "load repository ensemble + tag 1 file": best(
            lambda: trained_tagger(params, "submitted", "cpu").tag_files([files[0]]).__next__(), args.repeats),
    }
    tagger = load_tagger(args.model, "cpu")
    waves = [read_any(f) for f in files]
    ours = best(lambda: tagger.predict(waves), args.repeats)
    distilled = load_tagger(args.distilled, "cpu")
    fast = best(lambda: distilled.predict(waves), args.repeats)
    lite = load_numpy_tagger(args.distilled)
    light = best(lambda: lite.predict(waves), args.repeats)
    previous = best(lambda: previous_predict(tagger, members, waves), 1)
    difference = float(np.abs(tagger.predict(waves) - previous_predict(tagger, members, waves)).max())

    rows = [[name, f"{t:.2f} s", ""] for name, t in process.items()]
    rows += [[name, f"{t:.2f} s", ""] for name, t in in_process.items()]
    rows += [["throughput, previous tagger (snapshots reloaded)", f"{previous:.2f} s", f"{seconds / previous:.1f}x"],
             ["throughput, models loaded once", f"{ours:.2f} s", f"{seconds / ours:.1f}x"],
             ["throughput, distilled network (torch engine)", f"{fast:.2f} s", f"{seconds / fast:.1f}x"],
             ["throughput, distilled network (numpy engine, clip by clip)", f"{light:.2f} s", f"{seconds / light:.1f}x"]]
    print(table(["measurement", "wall time", "x realtime"], rows))
    print(f"speed-up over the previous tagger: {previous / ours:.2f}x; largest score difference {difference:.2e}")
    print(f"distilled network: {previous / fast:.1f}x the previous tagger's speed, {ours / fast:.1f}x the ensemble's")


if __name__ == "__main__":
    main()
