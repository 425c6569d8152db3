"""Paper-scale time on this device: measure real training steps and inference of every paper model, then project.

For each model of params/paper.yaml (A, B, B_leak_free, C, pre, D, E, F; docs/method.md §5, §7, §8) at its paper size,
on small temporary stores of random log-mels / waveforms whose clip lengths are realistic (curated 0.3-30 s, noisy
1-15 s), with the model's batch, crop, noisy batch (multitask) and soft-pseudo-label batch (spl):

- loader: seconds per batch of `BatchMaker` alone (numpy crops of the memory-mapped stores, in this thread);
- step alone: seconds per `Trainer.step` on batches made beforehand (augmentations, forward, backward, optimiser);
- step in the loop: seconds per step of the loop `FoldTraining.train_cycle` runs (fsdlib/train.py): `BatchMaker`
  inside `prefetch` (a thread preparing the next batch) feeding `Trainer.step`, the loss parts kept on the device and
  read back once at the end. Projections use this figure. "loader <= step" says whether the prefetch thread can keep
  up, so that the device never waits for the loader;
- FLOPs of one training step (torch.utils.flop_counter.FlopCounterMode: matrix products and convolutions, forward
  and backward), the FLOP/s the loop achieves and its share of the device's peak (`--peak-tflops`, else a table of
  known GPUs; blank on the CPU unless given);
- folds at once (docs/method.md §14): `--workers` spawned processes run the same loop at the same moment, each with
  its share of the host threads, and their summed steps per second over one loop's is the measured gain (or
  `--gain` states it);
- inference: `predict_clips` at full length on `--clips` test-like clips (0.3-30 s, log-uniform mid-quantiles, mean
  about 6.5 s) with the model's padding-TTA pads, as clip-seconds of audio per second per pad pass.

Then it projects the full pipeline (docs/method.md §7, dvc.yaml) on this device:

- training = cycles x epochs_per_cycle x steps_per_epoch x loop step time x 5 folds, steps_per_epoch =
  (4/5 x 4,970) // batch; one fold at a time, and divided by the gain of `--workers` folds at once;
- validation inside training = the held-out curated clips at the end of every cycle (4,970 clips per cycle over
  the 5 folds, no pads);
- OOF = 4,970 curated clips x snapshots x pads; test = 4,481 clips x 5 folds x snapshots x pads (models in
  ensemble.weights, as the predict stage runs them);
- teacher (spl.teacher, model A) = 19,815 noisy clips x 5 folds x its snapshots (all cycles), no pads.

Inference hours scale the measured clip-seconds per second to each subset's total audio, one process at a time.
Settings that cost the same (B and B_leak_free; pre and E for training; every ResNet34 or every EnvNet-v2 with the
same pads for inference) are measured once and shared. Figures are PROJECTIONS from a few steps: a loaded machine
makes them pessimistic.

On the CPU a paper step takes about a minute (ResNet34, 128 samples of 512 frames), so by default the timed steps
there are capped at 16 samples (same crop, same curated/noisy/SPL parts, smaller batch) and scaled linearly to the
model's batch; `--max-samples 0` times the model's full batch (minutes per model on 2 cores). About two minutes on
2 cores (benchmarks/README.md):

    .venv/bin/python benchmarks/bench_paper_scale.py --models A D --steps 2 --warmup 1 --clips 16 --max-samples 8

    .venv/bin/python benchmarks/bench_paper_scale.py [--steps 3] [--warmup 1] [--max-samples 16] [--clips 1000]
        [--workers W] [--gain G] [--peak-tflops T] [--device auto] [--models A B C] [--params params/paper.yaml]
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import N_CLASSES, durations, header, keep_freed_memory, logmel_clips, multi_hot, table, wave_clips, write_store
from torch.utils.flop_counter import FlopCounterMode

from fsdlib.batches import Batch, BatchMaker, FoldData
from fsdlib.device import cudnn_autotune, resolve_device
from fsdlib.inference import predict_clips
from fsdlib.models import build_network
from fsdlib.placement import Placement, host_cores
from fsdlib.prefetch import prefetch
from fsdlib.schedule import build_optimizer, cyclic_cosine_scheduler
from fsdlib.settings import EnsembleSettings, InferenceConfig, Params, SplSettings
from fsdlib.spec import ModelSpec
from fsdlib.store import FeatureStore
from fsdlib.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
CPU_MAX_SAMPLES = 16
LOADER_DRAWS = 8  # timed loader batches at least (the loader is cheap: more draws, a steadier median)
PAPER_MODELS = ("A", "B", "B_leak_free", "C", "pre", "D", "E", "F")

# FSDKaggle2019 (docs/method.md §1): clip counts, and mean clip durations in seconds. Curated: 10.5 h over 4,970 clips;
# noisy: 80 h over 19,815 clips (mostly 15 s); test: 0.3-30 s, mean about 7 s.
N_CURATED, N_NOISY, N_TEST, N_FOLDS = 4_970, 19_815, 4_481, 5
MEAN_SECONDS = {"curated": 10.5 * 3600 / N_CURATED, "noisy": 80 * 3600 / N_NOISY, "test": 7.0}
TRAIN_FRACTION = (N_FOLDS - 1) / N_FOLDS

# Dense bf16 tensor-core peaks (TFLOP/s) of known GPUs, by a piece of torch.cuda.get_device_name, first match wins.
# Training runs under bf16 autocast on GPUs that support it (README, Devices). H200: the figure this project plans
# with (NVIDIA's H200 SXM sheet lists 989 dense); pass --peak-tflops for another part or clock.
KNOWN_PEAKS = (("H200", 790.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))


class CpuShare:
    """Share of all cores that other processes kept busy between start() and stop() (/proc/stat minus the CPU time
    of this process and of the worker processes in `pids`); NaN where /proc/stat is unavailable."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.start()

    def _now(self) -> tuple[float, float, float]:
        tick = os.sysconf("SC_CLK_TCK")
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
            busy = (sum(fields) - fields[3] - fields[4]) / tick
        except (OSError, ValueError, IndexError):
            busy = float("nan")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        ours = usage.ru_utime + usage.ru_stime
        for pid in self.pids:  # utime and stime: fields 14 and 15 of /proc/<pid>/stat, after the ")" of the name
            try:
                ours += sum(int(v) for v in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]) / tick
            except (OSError, ValueError, IndexError):
                pass
        return time.perf_counter(), busy, ours

    def start(self) -> None:
        self.t0 = self._now()

    def stop(self) -> float:
        (w0, b0, s0), (w1, b1, s1) = self.t0, self._now()
        return max(0.0, ((b1 - b0) - (s1 - s0)) / ((w1 - w0) * (os.cpu_count() or 1)))


def quantile_durations(n: int, low: float, high: float) -> np.ndarray:
    """n clip durations at the mid-quantiles of a log-uniform law on [low, high] s: a sample that spans the test
    set's lengths (0.3-30 s, mostly short) evenly, instead of by chance."""
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


def device_peak(device: torch.device, stated: float | None) -> tuple[float | None, str]:
    """The device's peak TFLOP/s and where the figure comes from: `stated`, else the known-GPU table; none on the
    CPU (or an unknown GPU) unless stated."""
    if stated:
        return stated, f"{stated:g} TFLOP/s (--peak-tflops)"
    if device.type != "cuda":
        return None, "none for the CPU (give --peak-tflops for a share)"
    name = torch.cuda.get_device_name(device)
    for piece, tflops in KNOWN_PEAKS:
        if piece in name:
            return tflops, f"{tflops:g} TFLOP/s dense bf16 ({name}, known-GPU table)"
    return None, f"unknown for {name} (give --peak-tflops)"


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


def endless(spec: ModelSpec, data: FoldData, seed: int = 0) -> Iterator[Batch]:
    """`BatchMaker` batches epoch after epoch, each epoch as long as `FoldTraining` makes it (with SPL batches only
    when the model has `spl`)."""
    if not spec.spl:
        data = FoldData(data.curated, data.curated_targets, data.train_idx, data.val_idx, data.noisy,
                        data.noisy_targets)
    maker = BatchMaker(spec, data, max(1, len(data.train_idx) // spec.batch), seed=seed)
    while True:
        yield from maker.epoch()


def parts(spec: ModelSpec) -> int:
    """Batches per step: curated, plus noisy when multitask, plus soft-pseudo-label when spl."""
    return 1 + int(spec.multitask) + int(bool(spec.spl))


def capped(spec: ModelSpec, max_samples: int) -> ModelSpec:
    """The spec whose steps are timed: the model's own, or with a smaller batch when its step holds more than
    `max_samples` samples (> 0)."""
    if 0 < max_samples < spec.batch * parts(spec):
        return replace(spec, batch=max(1, max_samples // parts(spec)))
    return spec


@dataclass
class Setup:
    """A model ready to train on the device, as `FoldTraining` builds it."""

    spec: ModelSpec
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    trainer: Trainer
    gen: torch.Generator

    @classmethod
    def build(cls, spec: ModelSpec, device: torch.device) -> Setup:
        torch.manual_seed(0)
        model = build_network(spec, N_CLASSES).to(device)
        model.train()
        optimizer = build_optimizer(spec.optimizer, model.parameters(), spec.lr_max, spec.momentum, spec.weight_decay,
                                    nesterov=spec.nesterov)
        gen = torch.Generator(device).manual_seed(0)  # augmentation draws on the batch's device, as in training
        return cls(spec, model, optimizer, Trainer(spec, model, device), gen)


def loop_seconds(setup: Setup, data: FoldData, device: torch.device, steps: int,
                 barrier: Any = None) -> tuple[float, float]:
    """Start and end (time.monotonic) of `steps` steps of the training loop, after one untimed step of it.

    The loop of `FoldTraining.train_cycle`: `BatchMaker` in `prefetch`, `Trainer.step`, the loss parts stacked on
    the device, the learning rate scheduled every step, the parts read back once at the end. With `barrier`, every
    process waits there after its untimed step, so that their timed steps run at the same moment.
    """
    spec = setup.spec
    scheduler = cyclic_cosine_scheduler(setup.optimizer, 1000, spec.lr_max, spec.lr_min)
    batches = prefetch(endless(spec, data, seed=1))
    losses: list[torch.Tensor] = []
    try:
        with cudnn_autotune(device, fixed_shapes=not spec.crops):
            for done, batch in enumerate(batches, start=1):
                components = setup.trainer.step(batch, setup.gen, setup.optimizer)
                losses.append(torch.stack(list(components.values())))
                scheduler.step()
                if done == 1:
                    torch.stack(losses).tolist()  # the untimed step finished
                    if barrier is not None:
                        barrier.wait(timeout=900)
                    start = time.monotonic()
                if done == 1 + steps:
                    break
            torch.stack(losses[1:]).tolist()  # the one read-back (train_cycle's, once per epoch): waits for the device
            return start, time.monotonic()
    finally:
        batches.close()  # stops the prefetch thread


def measure_steps(name: str, spec: ModelSpec, data: FoldData, device: torch.device, warmup: int,
                  steps: int, max_samples: int) -> dict[str, Any]:
    """Loader, step-alone and in-loop seconds per step (medians over `steps`, after `warmup`; at least one untimed
    step, the one whose FLOPs are counted), and FLOPs per step, all at the model's batch.

    With `max_samples` > 0 and a step larger than that, the steps run at a smaller batch (same crop, same parts) and
    their time and FLOPs are scaled linearly to the model's batch.
    """
    full, spec = spec.batch, capped(spec, max_samples)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # the CUDA peak printed after each model is that model's
    setup = Setup.build(spec, device)
    untimed = max(1, warmup)

    # The loader alone: BatchMaker's crops, in this thread.
    loader, made, load_s = endless(spec, data), [], []
    for i in range(untimed + max(steps, LOADER_DRAWS)):
        start = time.perf_counter()
        batch = next(loader)
        if i >= untimed:
            load_s.append(time.perf_counter() - start)
        if i < untimed + steps:
            made.append(batch)
    samples = sum(len(part.x) for part in made[0].parts().values())

    # Trainer.step alone, on the batches made above; the first step's FLOPs counted.
    alone_s, flops = [], 0
    with cudnn_autotune(device, fixed_shapes=not spec.crops):
        for i, batch in enumerate(made):
            start = time.perf_counter()
            if i == 0:
                with FlopCounterMode(display=False) as counter:
                    setup.trainer.step(batch, setup.gen, setup.optimizer)
                flops = counter.get_total_flops()
            else:
                setup.trainer.step(batch, setup.gen, setup.optimizer)
            sync(device)
            took = time.perf_counter() - start
            if i >= untimed:
                alone_s.append(took)
            print(f"  {name}: step {i + 1}/{len(made)}{' (untimed)' if i < untimed else ''} {took:.2f} s alone, "
                  f"{samples} samples{f', {flops / 1e9:,.0f} GFLOP' if i == 0 else ''}", flush=True)
    del made

    # The training loop: BatchMaker in prefetch feeding Trainer.step.
    start, end = loop_seconds(setup, data, device, steps)
    loop = (end - start) / steps
    print(f"  {name}: {steps} step(s) in the training loop {loop:.2f} s each; loader alone "
          f"{statistics.median(load_s) * 1e3:.1f} ms per batch", flush=True)
    del setup
    gc.collect()
    scale = full / spec.batch
    load, alone = statistics.median(load_s) * scale, statistics.median(alone_s) * scale
    return {"load": load, "alone": alone, "step": loop * scale, "loop_measured": loop, "flops": flops * scale,
            "loader_ok": load <= alone, "measured": samples, "samples": full * parts(spec), "spec": spec}


def store_paths(data: FoldData) -> dict[str, Any]:
    """What a worker process needs to open `data` itself: store paths and targets (a store is a memory map)."""
    return {"kind": data.curated.kind, "curated": data.curated.path, "noisy": data.noisy.path,
            "curated_targets": data.curated_targets, "noisy_targets": data.noisy_targets,
            "spl_targets": data.spl_targets}


def open_data(paths: dict[str, Any]) -> FoldData:
    kind = paths["kind"]
    curated, noisy = FeatureStore.open(paths["curated"], kind), FeatureStore.open(paths["noisy"], kind)
    return FoldData(curated, paths["curated_targets"], np.arange(len(curated)), np.arange(0), noisy,
                    paths["noisy_targets"], spl_targets=paths["spl_targets"], spl_noisy_idx=np.arange(len(noisy)))


def crew_member(pipe: Any, barrier: Any, threads: int, device_name: str) -> None:
    """One fold worker of `Crew`: runs the training loop of each job it receives, in step with the others."""
    torch.set_num_threads(threads)
    keep_freed_memory()
    device = torch.device(device_name)
    while (job := pipe.recv()) is not None:
        try:
            setup = Setup.build(job["spec"], device)
            pipe.send(("ok", loop_seconds(setup, open_data(job["data"]), device, job["steps"], barrier)))
            del setup
            gc.collect()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the run
            barrier.abort()  # the others stop waiting for this one
            pipe.send(("error", repr(exc)))


class Crew:
    """`workers` spawned processes that train at the same moment, as a model's folds do when trained at once
    (docs/method.md §14): each its own model and loop, with `threads` torch threads."""

    def __init__(self, workers: int, threads: int, device: torch.device) -> None:
        ctx = mp.get_context("spawn")  # fresh interpreters: no inherited thread pools or CUDA state
        self.barrier = ctx.Barrier(workers)
        self.pipes, self.procs = [], []
        for _ in range(workers):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=crew_member, args=(there, self.barrier, threads, str(device)), daemon=True)
            proc.start()
            self.pipes.append(here)
            self.procs.append(proc)

    def run(self, spec: ModelSpec, data: FoldData, steps: int) -> float:
        """Seconds per step of the crew: from the first worker's start to the last one's end, over `steps`."""
        job = {"spec": spec, "data": store_paths(data), "steps": steps}
        for pipe in self.pipes:
            pipe.send(job)
        answers = [pipe.recv() for pipe in self.pipes]
        errors = [text for status, text in answers if status != "ok"]
        if errors:
            raise RuntimeError(f"a fold worker failed: {errors[0]}")
        spans = [span for _, span in answers]
        return (max(end for _, end in spans) - min(start for start, _ in spans)) / steps

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for proc in self.procs:
            proc.join(timeout=60)


def measure_gain(name: str, crew: Crew, step: dict[str, Any], data: FoldData, steps: int) -> float:
    """Throughput of the crew's workers training at once over one loop's (the same timed spec): workers x one
    loop's step time / the crew's step time, at most the number of workers (more is noise: a loaded machine
    slowed the one loop)."""
    workers = len(crew.procs)
    together = crew.run(step["spec"], data, steps)
    measured = workers * step["loop_measured"] / together
    gain = min(measured, float(workers))
    print(f"  {name}: {workers} loops at once {together:.2f} s per step each, one alone {step['loop_measured']:.2f} "
          f"s: gain x{measured:.2f}{f' (noise: counted as x{gain:g})' if gain < measured else ''}", flush=True)
    return gain


def measure_inference(name: str, spec: ModelSpec, clips: list[np.ndarray], seconds: np.ndarray,
                      cfg: InferenceConfig, device: torch.device) -> dict[str, Any]:
    """Clip-seconds of audio per second per pad pass of `predict_clips` at full length with the model's pads."""
    torch.manual_seed(0)
    model = build_network(spec, N_CLASSES).to(device).eval()
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
            teacher: str | None, gain: float = 1.0) -> dict[str, float]:
    """Projected hours of one model's share of the paper pipeline, from its loop step time and inference rate;
    training also with the folds at once (its hours divided by `gain`)."""
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
    out["train_at_once_h"] = out["train_h"] / gain
    out["infer_h"] = out["val_h"] + out["oof_h"] + out["test_h"] + out["teacher_h"]
    out["total_h"] = out["train_h"] + out["infer_h"]
    out["total_at_once_h"] = out["train_at_once_h"] + out["infer_h"]
    return out


def share(value: float, peak: float | None) -> str:
    return f"{value / (peak * 1e12):.1%}" if peak else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model and way of timing (default 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed training steps first (at least one is run: its FLOPs are counted)")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="cap on samples per timed step: larger steps run at a smaller batch (same crop and "
                             "parts) and are scaled linearly to the model's batch; 0 = the model's full batch. "
                             f"Default: {CPU_MAX_SAMPLES} on the CPU (keeps the run to a few minutes), 0 on CUDA")
    parser.add_argument("--clips", type=int, default=1000,
                        help="test-like clips for the inference measurement (default 1,000)")
    parser.add_argument("--workers", type=int, default=None,
                        help="folds trained at once (docs/method.md §14). Default: placement.gpu_workers of the params "
                             "(5) on a GPU; on the CPU cores / placement.cpu_threads (1), at most 5 folds. 1: no "
                             "concurrency")
    parser.add_argument("--worker-threads", type=int, default=None,
                        help="torch threads of each worker. Default: placement.cpu_threads on the CPU, the cores "
                             "divided among the workers on a GPU")
    parser.add_argument("--gain", type=float, default=None,
                        help="state the throughput gain of --workers folds at once over one (instead of measuring it)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s for the share of peak (default: known GPUs; none on the CPU)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:N")
    parser.add_argument("--models", nargs="+", default=list(PAPER_MODELS), help="a subset of the paper models")
    parser.add_argument("--params", type=Path, default=ROOT / "params" / "paper.yaml")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.clips < 1 or (args.max_samples or 0) < 0:
        parser.error("need --steps >= 1, --warmup >= 0, --clips >= 1 and --max-samples >= 0")
    if (args.workers is not None and args.workers < 1) or (args.gain is not None and args.gain <= 0):
        parser.error("need --workers >= 1 and --gain > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # large activations reused instead of page-faulted in on every step (see common.py)
    device = resolve_device(args.device)
    max_samples = args.max_samples if args.max_samples is not None else (CPU_MAX_SAMPLES if device.type == "cpu" else 0)
    params = Params.load(args.params)
    unknown = [m for m in args.models if m not in params.section("models")]
    if unknown:
        parser.error(f"unknown model(s) {unknown} in {args.params}")
    specs = {m: params.read(ModelSpec, f"models.{m}") for m in args.models}  # each checked as it is built
    cfg = params.read(InferenceConfig, "inference")
    predicted = set(params.read(EnsembleSettings, "ensemble").weights)
    teacher = params.read(SplSettings, "spl").teacher
    placement, cores = params.read(Placement, "placement"), host_cores()
    cpu_threads = placement.cpu_threads
    default_workers = placement.gpu_workers if device.type == "cuda" else max(1, min(N_FOLDS, cores // cpu_threads))
    workers = args.workers or default_workers
    threads = args.worker_threads or (cpu_threads if device.type == "cpu" else max(1, cores // workers))
    peak, peak_note = device_peak(device, args.peak_tflops)

    print(header(f"bench_paper_scale: paper-size models of {args.params.name}, measured on {device}, projected"))
    cap = f"at most {max_samples} samples per step, scaled to the model's batch" if max_samples else "full batches"
    at_once = (f"gain stated: x{args.gain:g}" if args.gain else
               f"measured: {workers} spawned workers of {threads} torch thread(s) each" if workers > 1 else "none")
    print(f"loadavg at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {max(1, args.warmup)} untimed + "
          f"{args.steps} timed step(s) per distinct training setting and way of timing ({cap}), {args.clips} "
          f"test-like clips (0.3-30 s) per distinct inference setting; {cfg}\n"
          f"folds at once: {workers} ({at_once}); peak: {peak_note}\n")

    rng = np.random.default_rng(args.seed)
    steps: dict[str, dict[str, Any]] = {}
    rates: dict[str, dict[str, Any]] = {}
    gains: dict[str, float] = {}
    shared: dict[str, str] = {}  # model -> the model whose training measurement it reuses
    loads: list[float] = []
    cpu = CpuShare()
    crew = Crew(workers, threads, device) if workers > 1 and args.gain is None else None
    cpu.pids = [proc.pid for proc in crew.procs] if crew else []
    try:
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
                cpu.start()
                measured = False
                tk, ik = train_key(spec), infer_key(spec)
                if tk in first_train:
                    print(f"  same training step as {first_train[tk]}: reusing its measurement")
                    steps[m], gains[m] = steps[first_train[tk]], gains[first_train[tk]]
                    shared[m] = first_train[tk]
                else:
                    steps[m] = measure_steps(m, spec, data[spec.kind], device, args.warmup, args.steps, max_samples)
                    gains[m] = (args.gain if args.gain else
                                measure_gain(m, crew, steps[m], data[spec.kind], args.steps) if crew else 1.0)
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
                loads.append(cpu.stop())
                print(f"  other processes' CPU during {m}: {loads[-1]:.0%} of all cores; loadavg "
                      f"{os.getloadavg()[0]:.2f}; {peak_memory(device)}", flush=True)
    finally:
        if crew is not None:
            crew.close()

    train_rows, hour_rows = [], []
    totals = dict.fromkeys(("train_h", "train_at_once_h", "infer_h", "total_h", "total_at_once_h"), 0.0)
    for m, spec in specs.items():
        s, g = steps[m], gains[m]
        p = project(m, spec, s, rates[m]["rate"], m in predicted, teacher, g)
        for k in totals:
            totals[k] += p[k]
        label = f"{m} (={shared[m]})" if m in shared else m
        flops_s = s["flops"] / s["step"]
        train_rows.append([label, spec.family, f"{spec.crop}x{spec.batch}", s["samples"], s["measured"],
                           f"{s['load']:.4f}", f"{s['alone']:.3f}", f"{s['step']:.3f}",
                           "yes" if s["loader_ok"] else "no", f"{s['flops'] / 1e9:,.0f}", f"{flops_s / 1e12:.3f}",
                           share(flops_s, peak), f"x{g:.2f}", f"{flops_s * g / 1e12:.3f}", share(flops_s * g, peak)])
        hour_rows.append([label, p["steps_per_epoch"], f"{p['train_steps']:,}", p["train_h"], p["train_at_once_h"],
                          f"{rates[m]['rate']:.1f}", p["val_h"], p["oof_h"], p["test_h"], p["teacher_h"], p["infer_h"],
                          p["total_h"], p["total_at_once_h"]])
    finite = [v for v in loads if v == v]
    load_note = (f"{statistics.mean(finite):.0%} of all cores on average during measurement (from {min(finite):.0%} "
                 f"to {max(finite):.0%}; loadavg {os.getloadavg()[0]:.2f} at the end)" if finite
                 else "an unknown share of the cores during measurement")
    gain_note = (f"stated gain x{args.gain:g}" if args.gain else
                 f"gain measured with {workers} workers of {threads} thread(s) at once" if crew else "no concurrency")
    print(f"\nTRAINING STEPS measured on {device} ({torch.get_num_threads()} torch threads; {max(1, args.warmup)} "
          f"untimed + {args.steps} timed step(s); {cap}); other processes used {load_note}. Seconds and FLOPs at "
          f"the model's batch; peak: {peak_note}; {workers} folds at once ({gain_note}):\n")
    print(table(["model", "family", "crop x batch", "samples/step", "measured at", "loader s/batch", "step s alone",
                 "step s in loop", "loader <= step", "GFLOP/step", "TFLOP/s", "of peak", f"gain {workers} at once",
                 "TFLOP/s at once", "of peak at once"], train_rows))
    print("loader: BatchMaker alone (crops of the memory-mapped stores), per batch of all parts. step alone: "
          "Trainer.step on batches made beforehand. step in loop: BatchMaker in prefetch feeding Trainer.step, as "
          "FoldTraining.train_cycle runs it (the projections use it). TFLOP/s: GFLOP/step (FlopCounterMode: matrix "
          "products and convolutions, forward and backward) / step in loop; at once: times the gain.")
    print(f"\nPROJECTIONS from these steps and {args.clips} test-like clips: hours per model over 5 folds; training "
          f"one fold at a time, and {workers} folds at once (training hours / gain; inference one process at a "
          "time in both):\n")
    print(table(["model", "steps/epoch", "train steps", "train h", f"train h {workers} at once", "infer clip-s/s",
                 "val h", "OOF h", "test h", "teacher h", "infer h", "total h", f"total h {workers} at once"],
                hour_rows))
    print(f"\nPROJECTED total on {device}: training {totals['train_h']:,.1f} h + inference {totals['infer_h']:,.1f} h "
          f"= {totals['total_h']:,.1f} h = {totals['total_h'] / 24:,.1f} days one fold at a time; with {workers} "
          f"folds at once ({gain_note}): training {totals['train_at_once_h']:,.1f} h, in all "
          f"{totals['total_at_once_h']:,.1f} h = {totals['total_at_once_h'] / 24:,.1f} days (no overlap between "
          "stages; the gain assumes every worker busy, exact when the workers divide the 5 folds)")
    print("'val h': the held-out fold predicted at every cycle's end inside training. Inference hours scale the "
          f"clip-seconds per second (per pad pass) to {MEAN_SECONDS['curated']:.1f} s mean curated, "
          f"{MEAN_SECONDS['test']:.1f} s test, {MEAN_SECONDS['noisy']:.1f} s noisy clips.")


if __name__ == "__main__":
    main()
