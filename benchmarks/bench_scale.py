"""The pipeline at FSDKaggle2019 size fractions: time, memory and disk per stage, their growth, and full size.

For each fraction f (default 1/16, 1/8, 1/4) it writes a dataset with FSDKaggle2019's counts and durations
times f (scripts/make_scale_dataset.py), then runs the real stage commands in a scratch directory whose
params.yaml is the repository's with short training: `fsd features`, `fsd folds`, `fsd train A 0` (the demo
ResNet) and `fsd train pre 0` (the demo EnvNet), one cycle of one epoch each on fold 0 of 5, `fsd teacher` (A's
predictions of every noisy clip), `fsd pseudo-label`, `fsd predict A` and `fsd predict pre` (test and fold 0's
held-out clips, two pads each), `fsd ensemble`, with the paper's inference caps (params/paper.yaml). Per stage
it prints wall time, CPU time, peak memory of the stage's process tree (scale_measure.py says how), bytes
written and seconds per audio hour; then each stage's
growth between consecutive sizes (time ratio / size ratio: 1.0 is linear, in wall and in CPU time) and a
projection to full size: the largest size's figures / f (linear through zero: an upper bound for a stage whose
time grows linearly or slower). `--wave-store` sets
features.wave_store (copy: the samples copied into data/features; reference: canonical WAVs read in place). A
size's data and outputs are deleted before the next (`--keep` keeps them).

    .venv/bin/python benchmarks/bench_scale.py [--fractions 0.0625 0.125 0.25] [--work /tmp/fsd-scale]
                                               [--wave-store reference] [--json results.json] [--report results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml
from common import header, table
from scale_measure import run_measured, tree_bytes

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "scripts" / "make_scale_dataset.py"
GIB = 1 << 30
NAN = float("nan")
SHORT = {"cycles": 1, "epochs_per_cycle": 1}
STAGES = [  # (label, command)
    ("features", ["fsd", "features"]),
    ("folds", ["fsd", "folds"]),
    ("train ResNet (A)", ["fsd", "train", "A", "0", "--no-progress"]),
    ("train EnvNet (pre)", ["fsd", "train", "pre", "0", "--no-progress"]),
    ("teacher (all noisy)", ["fsd", "teacher"]),
    ("pseudo-label", ["fsd", "pseudo-label"]),
    ("predict A", ["fsd", "predict", "A"]),
    ("predict pre", ["fsd", "predict", "pre"]),
    ("ensemble", ["fsd", "ensemble"]),
]


def bench_params(data_root: Path, wave_store: str) -> dict:
    """The repository's params.yaml with two models (A, pre) trained one epoch on fold 0, and their ensemble."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["root"] = str(data_root)
    params["features"]["wave_store"] = wave_store
    params["folds"]["ids"] = [0]
    # the paper's inference caps: the demo's max_samples keeps the batches its committed metrics were made with
    params["inference"] = yaml.safe_load((ROOT / "params" / "paper.yaml").read_text())["inference"]
    models = params["models"]
    params["models"] = {"A": {**models["A"], **SHORT},
                        "pre": {**models["pre"], **SHORT, "tta_pads": models["D"]["tta_pads"]}}
    params["stage_models"] = {"train": ["A", "pre"], "train_from_pre": [], "train_student": [],
                              "predict": ["A", "pre"]}
    params["spl"]["select"] = "fixed"  # "cv" chooses on the other folds' OOF, and only fold 0 is trained
    params["ensemble"]["weights"] = {"A": 1, "pre": 1}
    return params


def audio_hours(root: Path) -> float:
    """Hours of 16-bit mono 44.1 kHz audio in the dataset's WAV folders (44-byte headers)."""
    wavs = [p for folder in ("train_curated", "train_noisy", "test") for p in (root / folder).iterdir()]
    return sum(p.stat().st_size - 44 for p in wavs) / 2 / 44_100 / 3600


def run_size(fraction: float, work: Path, keep: bool, wave_store: str) -> dict:
    """Generate the dataset at `fraction`, run every stage, return the measurements."""
    base = work / f"f{fraction:g}"
    data, run, logs = base / "data", base / "run", base / "logs"
    shutil.rmtree(base, ignore_errors=True)
    for d in (run, logs):
        d.mkdir(parents=True)
    gen = run_measured([sys.executable, str(GENERATOR), str(data), "--fraction", str(fraction)], ROOT,
                       logs / "generate.log", base)
    if gen.returncode:
        raise SystemExit(f"generator failed: {(logs / 'generate.log').read_text()}")
    (run / "params.yaml").write_text(yaml.safe_dump(bench_params(data, wave_store), sort_keys=False))
    hours, wav_bytes = audio_hours(data), tree_bytes(data)
    print(f"f = {fraction:g}: {hours:.2f} h of audio, {wav_bytes / 1e9:.2f} GB of WAV "
          f"(generated in {gen.wall_s:.0f} s)", flush=True)
    rows = {}
    for label, cmd in STAGES:
        m = run_measured(cmd, run, logs / f"{cmd[1]}{'-' + cmd[2] if len(cmd) > 2 else ''}.log", run)
        rows[label] = m.__dict__
        print(f"  {label}: {m.wall_s:.1f} s ({m.cpu_s:.1f} s CPU), anon {m.peak_anon / GIB:.2f} GiB, "
              f"rss {m.peak_rss / GIB:.2f} GiB, written {m.written / 1e9:.3f} GB", flush=True)
        if m.returncode:
            log = (logs / f"{cmd[1]}{'-' + cmd[2] if len(cmd) > 2 else ''}.log").read_text()
            raise SystemExit(f"{label} failed ({m.returncode}):\n{log[-3000:]}")
    result = {"fraction": fraction, "hours": hours, "wav_bytes": wav_bytes, "wave_store": wave_store, "stages": rows}
    if not keep:
        shutil.rmtree(base)
    return result


def size_table(result: dict) -> str:
    """One size's per-stage figures."""
    rows = []
    for label, m in result["stages"].items():
        rows.append([label, m["wall_s"], m.get("cpu_s", NAN), f"{m['peak_anon'] / GIB:.2f}", f"{m['peak_rss'] / GIB:.2f}",
                     f"{m['maxrss'] / GIB:.2f}", f"{m['written'] / 1e9:.3f}", m["wall_s"] / result["hours"]])
    total = sum(m["wall_s"] for m in result["stages"].values())
    cpu = sum(m.get("cpu_s", NAN) for m in result["stages"].values())
    written = sum(m["written"] for m in result["stages"].values())
    rows.append(["all stages", total, cpu, "", "", "", f"{written / 1e9:.3f}", total / result["hours"]])
    return table(["stage", "wall s", "CPU s", "peak anon GiB", "peak RSS GiB", "maxrss GiB", "written GB",
                  "wall s per audio h"], rows)


def projection(results: list[dict]) -> str:
    """Growth per stage between consecutive sizes, and full size from the largest."""
    results = sorted(results, key=lambda r: r["fraction"])
    large = results[-1]
    steps = [f"x{b['fraction'] / a['fraction']:g} ({a['fraction']:g}->{b['fraction']:g})"
             for a, b in zip(results, results[1:], strict=False)]
    rows, totals = [], [0.0, 0.0, 0.0, 0]

    def growth(key: str, label: str) -> tuple[list[float], float]:
        """Growth factors between consecutive sizes, and full size: the largest size's figure / f."""
        t = [r["stages"][label].get(key, NAN) for r in results]  # no cpu_s in files of the first version
        factors = [(t[i + 1] / t[i]) / (results[i + 1]["fraction"] / results[i]["fraction"]) for i in range(len(t) - 1)]
        return factors, t[-1] / large["fraction"]

    for label in large["stages"]:
        wall, full_s = growth("wall_s", label)
        cpu, full_cpu = growth("cpu_s", label)
        anon = [r["stages"][label]["peak_anon"] / GIB for r in results]
        written = large["stages"][label]["written"] / large["fraction"]
        totals[0] += full_s
        totals[1] += full_cpu
        totals[2] = max(totals[2], max(anon))
        totals[3] += written
        rows.append([label, *[f"{g:.2f}" for g in wall], *[f"{g:.2f}" for g in cpu], "  ".join(f"{a:.2f}" for a in anon),
                     full_s / 60, full_cpu / 60, f"{written / 1e9:.1f}"])
    rows.append(["all stages", *[""] * (2 * len(steps)), f"max {totals[2]:.2f}", totals[0] / 60, totals[1] / 60,
                 f"{totals[3] / 1e9:.1f}"])
    wav = large["wav_bytes"] / large["fraction"]
    out = table(["stage", *[f"wall {s}" for s in steps], *[f"CPU {s}" for s in steps], "peak anon GiB per size",
                 "full wall min", "full CPU min", "full GB"], rows)
    return (f"{out}\n\nfull size ({large['hours'] / large['fraction']:.0f} h of audio): source WAVs "
            f"{wav / 1e9:.1f} GB + outputs {totals[3] / 1e9:.1f} GB = {(wav + totals[3]) / 1e9:.1f} GB of disk; "
            f"{totals[0] / 3600:.2f} h wall ({totals[1] / 3600:.2f} h CPU) for these stages; "
            f"peak anonymous RSS {totals[2]:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[1 / 16, 1 / 8, 1 / 4])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fsd-scale"), help="scratch folder (tens of GB)")
    parser.add_argument("--keep", action="store_true", help="keep each size's data and outputs")
    parser.add_argument("--wave-store", choices=["copy", "reference"], default="reference",
                        help="features.wave_store of the runs")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--report", type=Path, help="print the tables of a saved --json file and exit")
    args = parser.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        print(saved["header"])
        results = saved["results"]
    else:
        head = header("bench_scale: the pipeline at FSDKaggle2019 size fractions")
        print(head, flush=True)
        start, results = time.time(), []
        os.environ.setdefault("DVC_NO_ANALYTICS", "1")
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        for fraction in sorted(args.fractions):
            results.append(run_size(fraction, args.work, args.keep, args.wave_store))
            if args.json:  # after every size, so an interrupted run keeps what it measured
                args.json.write_text(json.dumps({"header": head, "results": results}, indent=1))
        print(f"\nran {time.time() - start:.0f} s; load after the run: {os.getloadavg()[0]:.1f}")
    for result in results:
        print(f"\nf = {result['fraction']:g}: {result['hours']:.2f} h of audio, {result['wav_bytes'] / 1e9:.2f} GB "
              f"of WAV, wave store {result.get('wave_store', 'copy')}\n{size_table(result)}")
    if len(results) >= 2:
        print(f"\ngrowth (time ratio / size ratio; 1.0 = linear) and full size\n{projection(results)}")


if __name__ == "__main__":
    main()
