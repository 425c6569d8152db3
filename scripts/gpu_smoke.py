"""GPU smoke test: the CUDA paths of training, inference and data-parallel training in a few minutes, one table.

1. `prepare` (on any machine, once): tiny synthetic feature stores (log-mels and waveforms whose class shows as a
   mel band or a tone), curated and noisy, with their targets; about 30 MiB for the default 64 clips per store.
2. `run --device cuda` (on the GPU machine; needs only torch, numpy, pyarrow and pyyaml besides the repository:
   fsdlib is imported from the checkout, no DVC and no audio libraries):
   - the demo ResNet (models.A) and EnvNet (models.pre) of params.yaml: a few `Trainer.step`s under the device's
     autocast (bf16 where supported), then `predict_clips` of the held-out clips on the device and, with the same
     weights, on the CPU: max |difference|, lwlrap of each, and the share of tied scores (ties within a clip's row);
   - one data-parallel cycle of models.A in a one-rank process group (NCCL on CUDA, gloo on the CPU) through the
     code torchrun runs: `FoldTraining` (resume state from rank 0, DDP, synchronised batch norm, loss parts
     averaged over ranks on the group's device), then its validation;
   - unless `--no-paper`, the paper-size networks' training step time and peak memory (ResNet34 and EnvNet-v2 at
     the paper's crop and batch, as `benchmarks/bench_paper_scale.py --device cuda` measures them: the step in the
     training loop).

`--steps` steps need not fit in one epoch of the prepared stores: training continues into further epochs, each as
long as `train_fold` makes it. `run --device cpu` is a dry run of the same code (tests/test_gpu_paths.py runs it
with the defaults); there the paper sizes run one timed step each, at `bench_paper_scale.py`'s capped CPU batch.

    python scripts/gpu_smoke.py prepare --out build/gpu_smoke
    python scripts/gpu_smoke.py run --inputs build/gpu_smoke --device cuda
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from fsdlib.batches import Batch, BatchMaker, FoldData  # noqa: E402
from fsdlib.device import resolve_device  # noqa: E402
from fsdlib.inference import predict_clips  # noqa: E402
from fsdlib.metrics import lwlrap  # noqa: E402
from fsdlib.models import build_network  # noqa: E402
from fsdlib.schedule import build_optimizer  # noqa: E402
from fsdlib.settings import InferenceConfig, Params  # noqa: E402
from fsdlib.spec import ModelSpec  # noqa: E402
from fsdlib.store import FeatureStore, StoreWriter  # noqa: E402
from fsdlib.train import FoldTraining, Trainer  # noqa: E402

N_CLASSES, N_MELS, SAMPLE_RATE = 80, 128, 44_100
FRAMES_PER_SECOND = SAMPLE_RATE / 347


def prepare(out: Path, clips: int, seed: int) -> None:
    """Curated and noisy stores of `clips` clips each, per kind, and their targets (noisy: a third relabelled)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for part in ("curated", "noisy"):
        classes = rng.integers(0, N_CLASSES, clips)
        targets = np.eye(N_CLASSES, dtype=np.float32)[classes]
        if part == "noisy":
            targets[: clips // 3] = np.roll(targets[: clips // 3], 1, axis=1)
        np.save(out / f"{part}_targets.npy", targets)
        seconds = rng.uniform(0.6, 3.0, clips)
        with StoreWriter(out / f"{part}.logmel.arrow", "logmel", np.float32, N_MELS) as writer:
            for i, (c, s) in enumerate(zip(classes, seconds, strict=True)):
                power = rng.standard_exponential((int(s * FRAMES_PER_SECOND), N_MELS)).astype(np.float32) * 1e-3
                band = int(c * 1.5)
                power[:, band : band + 2] += rng.random((len(power), 2)).astype(np.float32)
                writer.write([f"{part}{i:04d}.wav"], [power])
        with StoreWriter(out / f"{part}.wave.arrow", "wave", np.int16, 1) as writer:
            for i, (c, s) in enumerate(zip(classes, seconds / 2, strict=True)):
                t = np.arange(int(s * SAMPLE_RATE)) / SAMPLE_RATE
                tone = 6000 * np.sin(2 * np.pi * 200 * 2 ** (c / 16) * t) + rng.normal(0, 300, len(t))
                writer.write([f"{part}{i:04d}.wav"], [tone.astype(np.int16)])
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB): carry it to the GPU machine with the repository")


def fold_data(inputs: Path, kind: str) -> FoldData:
    """The stores of one kind; the last quarter of the curated clips held out."""
    curated = FeatureStore.open(inputs / f"curated.{kind}.arrow", kind)
    n = len(curated)
    return FoldData(curated, np.load(inputs / "curated_targets.npy"), np.arange(n - n // 4), np.arange(n - n // 4, n),
                    FeatureStore.open(inputs / f"noisy.{kind}.arrow", kind), np.load(inputs / "noisy_targets.npy"))


def tied_share(scores: np.ndarray) -> float:
    """Share of scores equal to another score of the same clip (row)."""
    ordered = np.sort(scores, axis=1)
    equal = ordered[:, 1:] == ordered[:, :-1]
    tied = np.zeros_like(ordered, dtype=bool)
    tied[:, 1:] |= equal
    tied[:, :-1] |= equal
    return float(tied.mean())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}" if device.type == "cuda" else "-"


def epochs(spec: ModelSpec, data: FoldData) -> Iterator[Batch]:
    """Batches epoch after epoch, each epoch as many steps as `train_fold` makes of the fold (docs/method.md §5), so
    any number of steps fits a store of any size."""
    maker = BatchMaker(spec, data, max(1, len(data.train_idx) // spec.batch), seed=0)
    while True:
        yield from maker.epoch()


def train_and_compare(label: str, spec: ModelSpec, data: FoldData, device: torch.device, steps: int) -> dict[str, Any]:
    """A few training steps on the device, then held-out predictions on the device and on the CPU."""
    torch.manual_seed(0)
    model = build_network(spec, N_CLASSES).to(device)
    optimizer = build_optimizer(spec.optimizer, model.parameters(), spec.lr_max, spec.momentum, spec.weight_decay,
                                spec.nesterov)
    trainer, gen = Trainer(spec, model, device), torch.Generator(device).manual_seed(0)
    reset_peak(device)
    model.train()
    times, losses = [], []
    for batch in itertools.islice(epochs(spec, data), steps):
        start = time.perf_counter()
        parts = trainer.step(batch, gen, optimizer)
        sync(device)
        times.append(time.perf_counter() - start)
        losses.append(float(parts["total"]))
    clips = [data.curated[int(i)] for i in data.val_idx]
    targets = data.curated_targets[data.val_idx]
    on_device = predict_clips(model, clips, spec.kind, spec.activation, (0,), spec.pad_mode, InferenceConfig(), device)
    cpu_model = copy.deepcopy(model).to("cpu")
    on_cpu = predict_clips(cpu_model, clips, spec.kind, spec.activation, (0,), spec.pad_mode, InferenceConfig(),
                           torch.device("cpu"))
    return {"row": label, "step s": f"{np.median(times[1:] or times):.3f}", "loss": f"{losses[-1]:.4f}",
            "finite": str(bool(np.isfinite(losses).all())), "max |dev-cpu|": f"{np.abs(on_device - on_cpu).max():.2e}",
            "lwlrap dev/cpu": f"{lwlrap(targets, on_device):.4f}/{lwlrap(targets, on_cpu):.4f}",
            "tied dev/cpu": f"{tied_share(on_device):.3f}/{tied_share(on_cpu):.3f}", "peak GiB": peak_gib(device)}


def one_rank_ddp(spec: ModelSpec, data: FoldData, device: torch.device) -> dict[str, Any]:
    """One cycle of `FoldTraining` in a process group of one: the code path of every rank under torchrun."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                                device_id=device)
    else:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    backend = dist.get_backend()
    try:
        reset_peak(device)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="gpu_smoke_state_") as state:
            run = FoldTraining(replace(spec, cycles=1, epochs_per_cycle=1), data, N_CLASSES, "A", 0, None, str(device),
                               Path(state), key="gpu-smoke")
            assert run.world.joined and run.world.device.type == device.type
            rows = run.train_cycle(progress=False)
            score = run.validate(InferenceConfig(), epoch=1)
            run.world.barrier()
        sync(device)
        return {"row": f"DDP (1 rank, {backend})", "step s": f"{(time.perf_counter() - start) / run.steps_per_epoch:.3f}",
                "loss": f"{rows[-1]['train/total']:.4f}", "finite": str(bool(np.isfinite(rows[-1]["train/total"]))),
                "max |dev-cpu|": "-", "lwlrap dev/cpu": f"{score:.4f}/-", "tied dev/cpu": f"{tied_share(run.oof[-1]):.3f}/-",
                "peak GiB": peak_gib(device)}
    finally:
        dist.destroy_process_group()


def paper_steps(device: torch.device, steps: int) -> list[dict[str, Any]]:
    """Training step time (in the training loop, `BatchMaker` in `prefetch` feeding `Trainer.step`) and peak memory
    of the paper-size ResNet34 (model A) and EnvNet-v2 (model D)."""
    import bench_paper_scale as bench

    params_path = ROOT / "params" / "paper.yaml"
    params = Params.load(params_path)
    out, rng = [], np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="gpu_smoke_paper_") as tmp:
        for name in ("A", "D"):
            spec = params.read(ModelSpec, f"models.{name}")
            (Path(tmp) / spec.kind).mkdir()
            data = bench.temporary_data(spec.kind, spec.batch, Path(tmp) / spec.kind, rng)
            reset_peak(device)
            # On the CPU (a dry run of this code) one timed step at bench_paper_scale's capped batch is enough.
            cuda = device.type == "cuda"
            measured = bench.measure_steps(name, spec, data, device, warmup=1, steps=steps if cuda else 1,
                                           max_samples=0 if cuda else bench.CPU_MAX_SAMPLES)
            out.append({"row": f"paper {name} ({spec.family}, {spec.crop}x{spec.batch})",
                        "step s": f"{measured['step']:.3f}", "loss": "-", "finite": "-", "max |dev-cpu|": "-",
                        "lwlrap dev/cpu": "-", "tied dev/cpu": "-", "peak GiB": peak_gib(device)})
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print(" | ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths, strict=True)))


def run(inputs: Path, device_name: str, steps: int, paper: bool) -> None:
    device = resolve_device(device_name)
    params = Params.load(ROOT / "params.yaml")
    resnet, envnet = params.read(ModelSpec, "models.A"), params.read(ModelSpec, "models.pre")
    began = time.perf_counter()
    logmel, wave = fold_data(inputs, "logmel"), fold_data(inputs, "wave")
    rows = [train_and_compare("demo ResNet (A)", resnet, logmel, device, steps),
            train_and_compare("demo EnvNet (pre)", envnet, wave, device, steps),
            one_rank_ddp(resnet, logmel, device)]
    if paper:
        rows += paper_steps(device, steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\ngpu_smoke on {device} ({name}), torch {torch.__version__}, "
          f"{time.perf_counter() - began:.0f} s in all; step s: median per step after the first (DDP: wall time of "
          "its cycle per step, validation included; paper: per step of the training loop, bench_paper_scale's "
          "measure_steps); predictions of the held-out quarter, pads (0,)\n")
    print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write the tiny feature stores")
    prep.add_argument("--out", type=Path, default=ROOT / "build" / "gpu_smoke")
    prep.add_argument("--clips", type=int, default=64, help="clips per store (curated and noisy, per kind)")
    prep.add_argument("--seed", type=int, default=0)
    go = sub.add_parser("run", help="train, predict and compare on the device")
    go.add_argument("--inputs", type=Path, default=ROOT / "build" / "gpu_smoke")
    go.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a dry run")
    go.add_argument("--steps", type=int, default=4, help="training steps per demo model (and timed paper steps)")
    go.add_argument("--no-paper", dest="paper", action="store_false", help="skip the paper-size step times")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.clips, args.seed)
    else:
        os.environ.pop("WORLD_SIZE", None)  # the one-rank group is made here, not by torchrun
        run(args.inputs, args.device, args.steps, args.paper)


if __name__ == "__main__":
    main()
