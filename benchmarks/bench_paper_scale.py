"""Paper-scale time on this device: measure real training steps and inference of every paper model, then project.

For each model of params/paper.yaml (A, B, B_leak_free, C, pre, D, E, F; docs/method.md §5, §7, §8) at its paper size:

- training: a few real `Trainer.step` calls after warm-up, with the model's batch, crop, noisy batch (multitask) and
  soft-pseudo-label batch (spl), drawn by `BatchMaker` from small temporary stores of random log-mels / waveforms
  whose clip lengths are realistic (curated 0.3-30 s, noisy 1-15 s);
- inference: `predict_clips` at full length on test-like clips (0.3-30 s, log-uniform, mean about 6.5 s) with the
  model's padding-TTA pads, as clip-seconds of audio per second per pad pass.

Then it projects the full pipeline (docs/method.md §7, dvc.yaml) on this device:

- training = cycles x epochs_per_cycle x steps_per_epoch x step time x 5 folds, steps_per_epoch = (4/5 x 4,970) // batch;
- validation inside training = the held-out curated clips at the end of every cycle (4,970 clips per cycle over
  the 5 folds, no pads);
- OOF = 4,970 curated clips x snapshots x pads; test = 4,481 clips x 5 folds x snapshots x pads (models in
  ensemble.weights, as the predict stage runs them);
- teacher (spl.teacher, model A) = 19,815 noisy clips x 5 folds x its snapshots (all cycles), no pads.

Inference hours scale the measured clip-seconds per second to each subset's total audio. Settings that cost the same
(B and B_leak_free; pre and E for training; every ResNet34 or every EnvNet-v2 with the same pads for inference)
are measured once and shared. Figures are PROJECTIONS from a few steps: a loaded machine makes them pessimistic.

On the CPU a paper step takes about a minute (ResNet34, 128 samples of 512 frames), so by default the timed steps
there are capped at 16 samples (same crop, same curated/noisy/SPL parts, smaller batch) and scaled linearly to the
model's batch; `--max-samples 0` times the model's full batch (minutes per model on 2 cores).

    .venv/bin/python benchmarks/bench_paper_scale.py [--steps 1] [--warmup 1] [--max-samples 16] [--clips 8]
                                                     [--device auto] [--models A B C] [--params params/paper.yaml]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import N_CLASSES, durations, header, keep_freed_memory, logmel_clips, multi_hot, table, wave_clips, write_store

from fsdlib.batches import Batch, BatchMaker, FoldData
from fsdlib.device import resolve_device
from fsdlib.inference import InferenceConfig, predict_clips
from fsdlib.schedule import build_optimizer
from fsdlib.spec import ModelSpec
from fsdlib.train import Trainer
from stages.common import build, load_params, section
from stages.settings import model_spec

ROOT = Path(__file__).resolve().parents[1]
CPU_MAX_SAMPLES = 16
PAPER_MODELS = ("A", "B", "B_leak_free", "C", "pre", "D", "E", "F")

# FSDKaggle2019 (docs/method.md §1): clip counts, and mean clip durations in seconds. Curated: 10.5 h over 4,970 clips;
# noisy: 80 h over 19,815 clips (mostly 15 s); test: 0.3-30 s, mean about 7 s.
N_CURATED, N_NOISY, N_TEST, N_FOLDS = 4_970, 19_815, 4_481, 5
MEAN_SECONDS = {"curated": 10.5 * 3600 / N_CURATED, "noisy": 80 * 3600 / N_NOISY, "test": 7.0}
TRAIN_FRACTION = (N_FOLDS - 1) / N_FOLDS


class CpuShare:
    """Share of all cores that other processes kept busy between start() and stop() (/proc/stat minus our own
    CPU time); NaN where /proc/stat is unavailable."""

    def __init__(self) -> None:
        self.start()

    @staticmethod
    def _now() -> tuple[float, float, float]:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
            busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            busy = float("nan")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), busy, usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self.t0 = self._now()

    def stop(self) -> float:
        (w0, b0, s0), (w1, b1, s1) = self.t0, self._now()
        return max(0.0, ((b1 - b0) - (s1 - s0)) / ((w1 - w0) * (os.cpu_count() or 1)))


def quantile_durations(n: int, low: float, high: float) -> np.ndarray:
    """n clip durations at the mid-quantiles of a log-uniform law on [low, high] s: a small sample that still
    spans the test set's lengths (0.3-30 s, mostly short) evenly, instead of by chance."""
    return np.exp(np.log(low) + (np.arange(n) + 0.5) / n * (np.log(high) - np.log(low)))


def peak_memory(device: torch.device) -> str:
    """Peak resident memory of this process so far (and of the CUDA allocator)."""
    text = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"
    if device.type == "cuda":
        text += f", CUDA peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
    return text


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_key(spec: ModelSpec) -> str:
    """What a training step costs depends on: everything but the schedule, the init and which pseudo labels."""
    d = asdict(spec)
    for k in ("cycles", "epochs_per_cycle", "lr_max", "lr_min", "init_from", "seed", "snapshot_cycles", "tta_pads"):
        d.pop(k)
    d["spl"] = bool(spec.spl)
    return json.dumps(d, sort_keys=True, default=str)


def infer_key(spec: ModelSpec) -> str:
    """What inference costs depends on: the network (curated head only) and the pads."""
    arch = {k: v for k, v in spec.arch.items() if k not in ("dropouts",)}
    return json.dumps([spec.family, arch, list(spec.tta_pads), spec.pad_mode], sort_keys=True, default=str)


def temporary_data(kind: str, n: int, tmp: Path, rng: np.random.Generator) -> FoldData:
    """Curated (0.3-30 s) and noisy (1-15 s) stores of n clips each, all curated clips in training, and soft
    pseudo labels for every noisy clip (used only by models with `spl`)."""
    make = logmel_clips if kind == "logmel" else wave_clips
    curated = write_store(tmp / f"curated.{kind}.arrow", kind, make(durations(n, 0.3, 30.0, rng), rng))
    noisy = write_store(tmp / f"noisy.{kind}.arrow", kind, make(durations(n, 1.0, 15.0, rng), rng))
    soft = rng.beta(0.3, 3.0, (n, N_CLASSES)).astype(np.float32)
    return FoldData(curated, multi_hot(n, rng), np.arange(n), np.arange(0), noisy, multi_hot(n, rng),
                    spl_targets=soft, spl_noisy_idx=np.arange(n))


def endless(spec: ModelSpec, data: FoldData) -> Iterator[Batch]:
    """`BatchMaker` batches epoch after epoch (with SPL batches only when the model has `spl`)."""
    if not spec.spl:
        data = FoldData(data.curated, data.curated_targets, data.train_idx, data.val_idx, data.noisy,
                        data.noisy_targets)
    maker = BatchMaker(spec, data, max(1, len(data.train_idx) // spec.batch), seed=0)
    while True:
        yield from maker.epoch()


def parts(spec: ModelSpec) -> int:
    """Batches per step: curated, plus noisy when multitask, plus soft-pseudo-label when spl."""
    return 1 + int(spec.multitask) + int(bool(spec.spl))


def measure_steps(name: str, spec: ModelSpec, data: FoldData, device: torch.device, warmup: int,
                  steps: int, max_samples: int) -> dict[str, Any]:
    """Seconds per `Trainer.step` at the model's batch (median of `steps` after `warmup`), loader seconds per batch.

    With `max_samples` > 0 and a step larger than that, the steps run at a smaller batch (same crop, same parts) and
    their time is scaled linearly to the model's batch.
    """
    full = spec.batch
    if 0 < max_samples < full * parts(spec):
        spec = replace(spec, batch=max(1, max_samples // parts(spec)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # the CUDA peak printed after each model is that model's
    torch.manual_seed(0)
    model = spec.build(N_CLASSES).to(device)
    model.train()
    optimizer = build_optimizer(spec.optimizer, model.parameters(), spec.lr_max, spec.momentum, spec.weight_decay,
                                nesterov=spec.nesterov)
    trainer = Trainer(spec, model, device)
    gen = torch.Generator(device).manual_seed(0)  # augmentation draws on the batch's device, as in training
    batches = endless(spec, data)
    step_s, load_s, samples = [], [], 0
    for i in range(warmup + steps):
        start = time.perf_counter()
        batch = next(batches)
        loaded = time.perf_counter()
        trainer.step(batch, gen, optimizer)
        sync(device)
        done = time.perf_counter()
        samples = sum(len(part.x) for part in batch.parts().values())
        if i >= warmup:
            step_s.append(done - loaded)
            load_s.append(loaded - start)
        print(f"  {name}: step {i + 1}/{warmup + steps}{' (warm-up)' if i < warmup else ''} "
              f"{done - loaded:.2f} s, loader {loaded - start:.2f} s, {samples} samples", flush=True)
    del trainer, optimizer, model, batches
    gc.collect()
    scale = full / spec.batch
    return {"step": statistics.median(step_s) * scale, "steps": step_s, "load": statistics.median(load_s) * scale,
            "measured": samples, "samples": full * parts(spec)}


def measure_inference(name: str, spec: ModelSpec, clips: list[np.ndarray], seconds: np.ndarray,
                      cfg: InferenceConfig, device: torch.device) -> dict[str, Any]:
    """Clip-seconds of audio per second per pad pass of `predict_clips` at full length with the model's pads."""
    torch.manual_seed(0)
    model = spec.build(N_CLASSES).to(device).eval()
    passes = max(1, len(spec.tta_pads))
    order = np.argsort([len(c) for c in clips])
    warm = [clips[i] for i in order[:: max(1, len(clips) // 3)]]  # a few lengths
    predict_clips(model, warm, spec.kind, spec.activation, spec.tta_pads, spec.pad_mode, cfg, device)
    sync(device)
    start = time.perf_counter()
    predict_clips(model, clips, spec.kind, spec.activation, spec.tta_pads, spec.pad_mode, cfg, device)
    sync(device)
    elapsed = time.perf_counter() - start
    rate = float(seconds.sum()) * passes / elapsed
    print(f"  {name}: inference on {len(clips)} clips ({seconds.sum():.0f} s of audio) x {passes} pad pass(es): "
          f"{elapsed:.1f} s, {rate:.1f} clip-seconds per second", flush=True)
    del model
    gc.collect()
    return {"rate": rate, "elapsed": elapsed}


def project(name: str, spec: ModelSpec, step: dict[str, Any], rate: float, predicted: bool,
            teacher: str | None) -> dict[str, float]:
    """Projected hours of one model's share of the paper pipeline, from its step time and inference rate."""
    steps_per_epoch = int(TRAIN_FRACTION * N_CURATED) // spec.batch
    train_steps = spec.cycles * spec.epochs_per_cycle * steps_per_epoch * N_FOLDS
    snapshots = len(spec.snapshot_cycles) if spec.snapshot_cycles else spec.cycles
    passes = max(1, len(spec.tta_pads))
    curated_s, test_s, noisy_s = (N_CURATED * MEAN_SECONDS["curated"], N_TEST * MEAN_SECONDS["test"],
                                  N_NOISY * MEAN_SECONDS["noisy"])
    hours = 1 / 3600
    out = {
        "steps_per_epoch": steps_per_epoch,
        "train_steps": train_steps,
        "train_h": train_steps * step["step"] * hours,
        "val_h": curated_s * spec.cycles / rate * hours,
        "oof_h": curated_s * snapshots * passes / rate * hours if predicted else 0.0,
        "test_h": test_s * N_FOLDS * snapshots * passes / rate * hours if predicted else 0.0,
        "teacher_h": noisy_s * N_FOLDS * spec.cycles / rate * hours if name == teacher else 0.0,
    }
    out["infer_h"] = out["val_h"] + out["oof_h"] + out["test_h"] + out["teacher_h"]
    out["total_h"] = out["train_h"] + out["infer_h"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1, help="timed training steps per model (after warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="cap on samples per timed step: larger steps run at a smaller batch (same crop and "
                             "parts) and are scaled linearly to the model's batch; 0 = the model's full batch. "
                             f"Default: {CPU_MAX_SAMPLES} on the CPU (keeps the run to a few minutes), 0 on CUDA")
    parser.add_argument("--clips", type=int, default=8, help="test-like clips for the inference measurement")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:N")
    parser.add_argument("--models", nargs="+", default=list(PAPER_MODELS), help="a subset of the paper models")
    parser.add_argument("--params", type=Path, default=ROOT / "params" / "paper.yaml")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.clips < 1 or (args.max_samples or 0) < 0:
        parser.error("need --steps >= 1, --warmup >= 0, --clips >= 1 and --max-samples >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # large activations reused instead of page-faulted in on every step (see common.py)
    device = resolve_device(args.device)
    max_samples = args.max_samples if args.max_samples is not None else (CPU_MAX_SAMPLES if device.type == "cpu" else 0)
    params = load_params(args.params)
    unknown = [m for m in args.models if m not in section(params, "models", args.params)]
    if unknown:
        parser.error(f"unknown model(s) {unknown} in {args.params}")
    specs = {m: model_spec(params, m, args.params) for m in args.models}  # each checked as it is built
    cfg = build(InferenceConfig, section(params, "inference", args.params), "inference", args.params)
    predicted = set(section(params, "ensemble", args.params).get("weights", {}))
    teacher = params.get("spl", {}).get("teacher")

    print(header(f"bench_paper_scale: paper-size models of {args.params.name}, measured on {device}, projected"))
    cap = f"at most {max_samples} samples per step, scaled to the model's batch" if max_samples else "full batches"
    print(f"loadavg at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.warmup} warm-up + "
          f"{args.steps} timed step(s) per distinct training setting ({cap}), {args.clips} test-like clips "
          f"(0.3-30 s) per distinct inference setting; {cfg}\n")

    rng = np.random.default_rng(args.seed)
    steps: dict[str, dict[str, Any]] = {}
    rates: dict[str, dict[str, Any]] = {}
    shared: dict[str, str] = {}  # model -> the model whose measurement it reuses
    loads: list[float] = []
    share = CpuShare()
    with tempfile.TemporaryDirectory(prefix="bench_paper_scale_") as tmp:
        data: dict[str, FoldData] = {}
        test_seconds = quantile_durations(args.clips, 0.3, 30.0)
        test_clips: dict[str, list[np.ndarray]] = {}
        first_train: dict[str, str] = {}
        first_infer: dict[str, str] = {}
        for m, spec in specs.items():
            print(f"{m}: {spec.family}, crop {spec.crop}, batch {spec.batch}, multitask {spec.multitask}, "
                  f"spl {spec.spl_variant}, pads {list(spec.tta_pads)}", flush=True)
            if spec.kind not in data:
                n = max(s.batch for s in specs.values() if s.kind == spec.kind)
                data[spec.kind] = temporary_data(spec.kind, n, Path(tmp), rng)
                make = logmel_clips if spec.kind == "logmel" else wave_clips
                test_clips[spec.kind] = make(test_seconds, np.random.default_rng(args.seed + 1))
            share.start()
            measured = False
            tk, ik = train_key(spec), infer_key(spec)
            if tk in first_train:
                print(f"  same training step as {first_train[tk]}: reusing its measurement")
                steps[m] = steps[first_train[tk]]
                shared[m] = first_train[tk]
            else:
                steps[m] = measure_steps(m, spec, data[spec.kind], device, args.warmup, args.steps, max_samples)
                first_train[tk] = m
                measured = True
            if ik in first_infer:
                print(f"  same inference as {first_infer[ik]}: reusing its measurement")
                rates[m] = rates[first_infer[ik]]
            else:
                rates[m] = measure_inference(m, spec, test_clips[spec.kind], test_seconds, cfg, device)
                first_infer[ik] = m
                measured = True
            if not measured:
                continue
            loads.append(share.stop())
            print(f"  other processes' CPU during {m}: {loads[-1]:.0%} of all cores; loadavg "
                  f"{os.getloadavg()[0]:.2f}; {peak_memory(device)}", flush=True)

    rows, totals = [], {"train_h": 0.0, "infer_h": 0.0, "total_h": 0.0}
    for m, spec in specs.items():
        p = project(m, spec, steps[m], rates[m]["rate"], m in predicted, teacher)
        for k in totals:
            totals[k] += p[k]
        note = f" (={shared[m]})" if m in shared else ""
        rows.append([f"{m}{note}", spec.family, f"{spec.crop}x{spec.batch}", steps[m]["samples"],
                     steps[m]["measured"], f"{steps[m]['step']:.2f}", p["steps_per_epoch"], f"{p['train_steps']:,}",
                     p["train_h"], f"{rates[m]['rate']:.1f}", p["val_h"], p["oof_h"], p["test_h"], p["teacher_h"],
                     p["infer_h"], p["total_h"]])
    finite = [v for v in loads if v == v]
    load_note = (f"{statistics.mean(finite):.0%} of all cores on average during measurement (from {min(finite):.0%} "
                 f"to {max(finite):.0%}; loadavg {os.getloadavg()[0]:.2f} at the end)" if finite
                 else "an unknown share of the cores during measurement")
    print(f"\nPROJECTIONS from {args.steps} measured step(s) per model (after {args.warmup} warm-up; {cap}) and "
          f"{args.clips} test-like clips on {device} ({torch.get_num_threads()} torch threads); other processes used "
          f"{load_note}. Hours per model over 5 folds:\n")
    print(table(["model", "family", "crop x batch", "samples/step", "measured at", "step s", "steps/epoch", "train steps",
                 "train h", "infer clip-s/s", "val h", "OOF h", "test h", "teacher h", "infer h", "total h"], rows))
    hours = totals["total_h"]
    print(f"\nPROJECTED total on {device}: training {totals['train_h']:,.1f} h + inference {totals['infer_h']:,.1f} h "
          f"= {hours:,.1f} h = {hours / 24:,.1f} days (one process at a time, no overlap between stages)")
    print("step s: median of the timed steps of Trainer.step (augmentations, forward, backward, optimiser; the "
          "loader runs in a prefetch thread in train_fold and is not counted), times samples/step over 'measured "
          "at' where the step was capped. 'val h': the held-out fold predicted "
          "at every cycle's end inside training. Inference hours scale the clip-seconds per second (per pad pass) to "
          f"{MEAN_SECONDS['curated']:.1f} s mean curated, {MEAN_SECONDS['test']:.1f} s test, "
          f"{MEAN_SECONDS['noisy']:.1f} s noisy clips.")


if __name__ == "__main__":
    main()
