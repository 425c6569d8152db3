"""Tagging speed of the exported taggers: the ONNX graphs on onnxruntime beside the same files on torch, one run.

For the distilled network (`data/tagger_distilled.onnx` / `.pt`) and the full submitted ensemble (`data/tagger.onnx`
/ `.pt`, EnvNets included when the ensemble has them): the cold start of a whole `fsd tag --model` process tagging
one file (Python, imports, the file loaded, one clip tagged), and the throughput over a folder (audio seconds per
wall second, files read beforehand). The torch engine is the reference. Run it where `dvc repro` has run:

    .venv/bin/python benchmarks/bench_tag.py [--clips data/demo/test] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import header, keep_freed_memory, table

from fsdlib.audio import read_any
from fsdlib.onnx_tagger import OnnxTagger
from fsdlib.tagger import expand_paths, load_tagger


def best(fn, repeats: int) -> float:
    """The best wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cold_start(model: Path, clip: str, repeats: int) -> float:
    """A whole `fsd tag --model` process tagging one file, on the CPU."""
    fsd = str(Path(sys.executable).parent / "fsd")
    return best(lambda: subprocess.run([fsd, "tag", "--model", str(model), clip, "--device", "cpu"], check=True,
                                       capture_output=True), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=Path("data/demo/test"))
    parser.add_argument("--data", type=Path, default=Path("data"), help="where the exported files are")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()
    print(header("bench_tag: exported taggers on onnxruntime and on torch"))
    files = expand_paths([args.clips])
    seconds = sum(sf.info(f).frames / sf.info(f).samplerate for f in files)
    waves = [read_any(f) for f in files]
    print(f"{len(files)} files, {seconds:.0f} s of audio; {os.cpu_count()} cores, torch {torch.get_num_threads()} "
          "threads")
    rows = []
    for label, stem in (("distilled network", "tagger_distilled"), ("full ensemble", "tagger")):
        onnx_file, torch_file = args.data / f"{stem}.onnx", args.data / f"{stem}.pt"
        onnx_tagger, torch_tagger = OnnxTagger(onnx_file), load_tagger(torch_file, "cpu")
        members = ", ".join(f"{m['name']} ({m['kind']}, {m['snapshots']} snapshots, pads {m['pads']})"
                            for m in onnx_tagger.members)
        print(f"{label}: {members}")
        difference = float(np.abs(onnx_tagger.predict(waves) - torch_tagger.predict(waves)).max())
        start = {"onnx": cold_start(onnx_file, str(files[0]), args.repeats),
                 "torch": cold_start(torch_file, str(files[0]), args.repeats)}
        speed = {"onnx": best(lambda t=onnx_tagger: t.predict(waves), args.repeats),
                 "torch": best(lambda t=torch_tagger: t.predict(waves), args.repeats)}
        for engine, file in (("onnx", onnx_file), ("torch", torch_file)):
            rows.append([label, f"{engine} ({file.name})", f"{start[engine]:.2f} s", f"{speed[engine]:.2f} s",
                         f"{seconds / speed[engine]:.0f}x"])
        rows.append([label, "onnx / torch", f"{start['onnx'] / start['torch']:.2f}",
                     f"{speed['onnx'] / speed['torch']:.2f}", f"max |score difference| {difference:.1e}"])
    print(table(["tagger", "engine", "cold start, 1 file (process)", f"{len(files)} files", "x realtime"], rows))


if __name__ == "__main__":
    main()
