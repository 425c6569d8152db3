"""Loader and training-step throughput on this machine (docs/method.md §3, §5).

Measures, in samples per second (a step draws `batch` curated and `batch` noisy clips, so 2 × batch samples):

- the loader alone: `BatchMaker` cropping from memory-mapped stores, then the batched torch augmentations and
  `logmel_to_input` as the training step applies them (no model);
- a full training step (`Trainer.step`: augmentations, forward, backward, optimiser) on prepared batches;
- the training loop as `train_fold` runs it (loader in the prefetch thread, steps in the main thread).

for the demo ResNet (models.A), the paper's ResNet34 (crop 512, batch 64) and EnvNet-v2 (demo and paper crops).
Target: the log-mel loader delivers at least 2,000 samples/s at crop 512, batch 64, and outpaces the demo step.

    .venv/bin/python benchmarks/bench_loader.py [--clips 300] [--paper-steps 2] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    DEMO_ENVNET,
    DEMO_RESNET,
    N_CLASSES,
    PAPER_ENVNET,
    PAPER_RESNET,
    durations,
    header,
    keep_freed_memory,
    logmel_clips,
    multi_hot,
    table,
    timed,
    wave_clips,
    write_store,
)

from fsdlib.augment import augment_logmel, freq_mask, mixup, random_gain, random_gain_db, time_scale
from fsdlib.batches import Batch, BatchMaker, FoldData
from fsdlib.clip_input import logmel_to_input
from fsdlib.models import build_network
from fsdlib.prefetch import prefetch
from fsdlib.schedule import build_optimizer
from fsdlib.spec import ModelSpec
from fsdlib.train import Trainer

LOGMEL_TARGET = 2_000  # samples/s at crop 512, batch 64


def fold_data(kind: str, n: int, tmp: Path, rng: np.random.Generator) -> FoldData:
    """A curated store (0.3-30 s clips) and a noisy store (1-16 s) of n clips each, every curated clip in training."""
    make = logmel_clips if kind == "logmel" else wave_clips
    curated = write_store(tmp / f"curated.{kind}.arrow", kind, make(durations(n, 0.3, 30.0, rng), rng))
    noisy = write_store(tmp / f"noisy.{kind}.arrow", kind, make(durations(n, 1.0, 16.0, rng), rng))
    return FoldData(curated, multi_hot(n, rng), np.arange(n), np.arange(0), noisy, multi_hot(n, rng))


def endless(spec: ModelSpec, data: FoldData, seed: int = 0) -> Iterator[Batch]:
    """Batches of `BatchMaker`, epoch after epoch."""
    maker = BatchMaker(spec, data, max(1, len(data.train_idx) // spec.batch), seed)
    while True:
        yield from maker.epoch()


class Bench:
    """The measurements of one model setting; each returns samples per second."""

    def __init__(self, spec: ModelSpec, data: FoldData, repeats: int) -> None:
        self.spec, self.data, self.repeats = spec, data, repeats
        self.batches = endless(spec, data)
        self.gen = torch.Generator().manual_seed(0)
        self.samples = 2 * spec.batch  # curated + noisy
        self._trainer: Trainer | None = None

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            self._trainer = Trainer(self.spec, build_network(self.spec, N_CLASSES), torch.device("cpu"))
        return self._trainer

    def rate(self, fn: Any, repeats: int | None = None, warmup: int = 2) -> float:
        return self.samples / timed(fn, warmup, repeats or self.repeats)

    def crop(self) -> float:
        return self.rate(lambda: next(self.batches))

    def _augmented(self, batch: Batch) -> None:
        # Exactly what Trainer.step does to a batch before the forward pass (Trainer.prepare).
        self.trainer.prepare(batch.curated, self.gen)
        self.trainer.prepare(batch.noisy, self.gen)

    def loader(self) -> float:
        return self.rate(lambda: self._augmented(next(self.batches)))

    def step(self, repeats: int, warmup: int) -> float:
        prepared = [next(self.batches) for _ in range(min(repeats + warmup, 4))]
        model = self.trainer.model.train()
        optimizer = build_optimizer(self.spec.optimizer, model.parameters(), self.spec.lr_max)
        count = iter(range(10**9))

        def one() -> None:
            self.trainer.step(prepared[next(count) % len(prepared)], self.gen, optimizer)

        return self.rate(one, repeats, warmup)

    def loop(self, steps: int) -> float:
        """Steps as train_fold runs them: the loader in the prefetch thread, one warm-up step first."""
        model = self.trainer.model.train()
        optimizer = build_optimizer(self.spec.optimizer, model.parameters(), self.spec.lr_max)
        batches = prefetch(b for _, b in zip(range(steps + 1), self.batches, strict=False))
        self.trainer.step(next(batches), self.gen, optimizer)
        start = time.perf_counter()
        for batch in batches:
            self.trainer.step(batch, self.gen, optimizer)
        return self.samples * steps / (time.perf_counter() - start)


def breakdown(bench: Bench) -> list[list[object]]:
    """Milliseconds per step (curated + noisy halves) of each part of the loader, one batch timed repeatedly."""
    batch = next(bench.batches)
    aug, gen = bench.trainer.augment, bench.gen
    x = [torch.from_numpy(batch.curated.x), torch.from_numpy(batch.noisy.x)]
    y = [torch.from_numpy(batch.curated.y), torch.from_numpy(batch.noisy.y)]

    def each(fn: Any) -> Any:
        return lambda: [fn(half, targets) for half, targets in zip(x, y, strict=True)]

    parts: dict[str, Any] = {"crop (BatchMaker, numpy)": lambda: next(bench.batches)}
    if bench.spec.kind == "logmel":
        x = [half.transpose(1, 2) for half in x]  # (B, n_mels, T), as Trainer.prepare hands it on
        valid = torch.from_numpy(batch.curated.valid)
        parts.update({
            "augment_logmel: mixup": each(lambda p, t: mixup(p, t, aug.p, aug.mixup_alpha, gen)),
            "augment_logmel: gain": each(lambda p, t: random_gain(p, aug.p, *aug.gain_range, gen)),
            "augment_logmel: frequency mask": each(lambda p, t: freq_mask(p, aug.p, aug.freq_mask_range, gen)),
            "augment_logmel, all": each(lambda p, t: augment_logmel(p, t, valid, aug, gen)),
            "logmel_to_input (dB, standardise)": each(lambda p, t: logmel_to_input(p)),
        })
    else:
        parts.update({
            "augment_wave: mixup": each(lambda w, t: mixup(w, t, aug.p, aug.mixup_alpha, gen)),
            "augment_wave: time scale": each(lambda w, t: time_scale(w, aug.p, aug.scale_range, gen)),
            "augment_wave: gain": each(lambda w, t: random_gain_db(w, aug.p, aug.gain_db, gen)),
        })
    parts["all but the crop, as Trainer.prepare"] = lambda: bench._augmented(batch)
    return [[name, 1e3 * timed(fn, 2, bench.repeats)] for name, fn in parts.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=300, help="clips in each log-mel store (curated, noisy)")
    parser.add_argument("--wave-clips", type=int, default=150, help="clips in each waveform store")
    parser.add_argument("--repeats", type=int, default=15, help="timed loader batches per setting")
    parser.add_argument("--demo-steps", type=int, default=10, help="timed training steps of the demo models")
    parser.add_argument("--paper-steps", type=int, default=1, help="timed steps of ResNet34 (0 skips it)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="raise glibc's mmap/trim thresholds first (see common.keep_freed_memory)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory and not keep_freed_memory():
        raise SystemExit("--keep-freed-memory needs glibc")
    note = " [glibc keeps freed memory]" if args.keep_freed_memory else ""
    print(header(f"bench_loader: loader + augmentation vs training step, samples/s (2 x batch per step){note}"))

    rng = np.random.default_rng(args.seed)
    rows: list[list[object]] = []

    def add(what: str, spec: ModelSpec, name: str, rate: float) -> float:
        rows.append([what, name, spec.crop, spec.batch, 1e3 * 2 * spec.batch / rate, rate])
        print(f"  {what:<34} {name:<20} {rate:>9,.0f} samples/s", flush=True)
        return rate

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        logmel = fold_data("logmel", args.clips, Path(tmp), rng)
        wave = fold_data("wave", args.wave_clips, Path(tmp), rng)
        frames = int(logmel.curated.lengths.sum() + logmel.noisy.lengths.sum())
        print(f"stores: {args.clips} + {args.clips} log-mel clips ({frames:,} frames of 128 mels), "
              f"{args.wave_clips} + {args.wave_clips} waveforms, written in {time.perf_counter() - start:.1f} s\n")

        demo = Bench(DEMO_RESNET, logmel, args.repeats)
        demo_crop = add("loader: crop only", DEMO_RESNET, "demo ResNet (A)", demo.crop())
        demo_loader = add("loader + augment + to_input", DEMO_RESNET, "demo ResNet (A)", demo.loader())
        demo_step = add("training step", DEMO_RESNET, "demo ResNet (A)", demo.step(args.demo_steps, 2))
        add("training loop (prefetch + step)", DEMO_RESNET, "demo ResNet (A)", demo.loop(args.demo_steps))

        paper = Bench(PAPER_RESNET, logmel, args.repeats)
        add("loader: crop only", PAPER_RESNET, "ResNet34 (paper)", paper.crop())
        paper_loader = add("loader + augment + to_input", PAPER_RESNET, "ResNet34 (paper)", paper.loader())
        paper_step = None
        if args.paper_steps > 0:
            paper_step = add("training step", PAPER_RESNET, "ResNet34 (paper)", paper.step(args.paper_steps, 1))

        # EnvNet-v2 at the paper's augmentations (mixup, time scale, gain); demo and paper crops.
        envnet = Bench(DEMO_ENVNET, wave, args.repeats)
        add("loader + augment", envnet.spec, "demo EnvNet (D)", envnet.loader())
        add("training step", envnet.spec, "demo EnvNet (D)", envnet.step(args.demo_steps, 2))
        paper_wave = Bench(PAPER_ENVNET, wave, args.repeats)
        add("loader + augment", PAPER_ENVNET, "EnvNet-v2 (paper D)", paper_wave.loader())

        print()
        print(table(["measured", "model", "crop", "batch", "ms/step", "samples/s"], rows))
        print(f"\nloader / step, demo ResNet:  {demo_loader / demo_step:.1f}x "
              f"(crop alone: {demo_crop / demo_step:.1f}x)")
        if paper_step is not None:
            print(f"loader / step, ResNet34:     {paper_loader / paper_step:.1f}x")
        verdict = "meets" if paper_loader >= LOGMEL_TARGET else "BELOW"
        print(f"log-mel loader at crop 512, batch 64: {paper_loader:,.0f} samples/s, {verdict} the "
              f"{LOGMEL_TARGET:,}/s target; {'faster' if demo_loader > demo_step else 'SLOWER'} than the demo step")

        for bench in (paper, paper_wave):
            print(f"\nwhere the {bench.spec.kind} loader's time goes at crop {bench.spec.crop}, batch {bench.spec.batch} "
                  "(ms per step, curated + noisy halves):")
            print(table(["part", "ms/step"], breakdown(bench)))


if __name__ == "__main__":
    main()
