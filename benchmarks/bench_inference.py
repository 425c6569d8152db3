"""Full-length inference: our path against the authors' one-clip-per-batch loop (docs/method.md §8), on test-like clips.

Ours: `predict_clips` with the default `InferenceConfig` (clips sorted by length, batched within a length
tolerance, each padded to its group's longest, the network told each clip's length so that it ignores the
padding) on its inference copy of the network (batch norms folded into the convolutions, channels-last memory).
The authors' loop: the plain eval-mode network called on each clip alone. A third run, one clip per batch on the
folded copy, separates the two gains (grouping, folding); a fourth, the grouped batches without the lengths (the
padding seen as signal), gives the cost of the masking. Same random-initialised model, same clips; prints the
time of each, where the time goes (input preparation vs the network) and the largest difference between ours
and the clips alone (float rounding only) and between the unmasked run and the clips alone.
Target: at least 4x over the authors' loop for the demo models.

    .venv/bin/python benchmarks/bench_inference.py [--clips 200] [--wave-clips 200] [--pads 8 32] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence

import numpy as np
import torch
from common import (
    DEMO_ENVNET,
    DEMO_RESNET,
    N_CLASSES,
    N_MELS,
    durations,
    header,
    keep_freed_memory,
    logmel_clips,
    table,
    wave_clips,
)

from fsdlib.inference import length_groups, predict_clips
from fsdlib.models import TaggingModel, build_network
from fsdlib.settings import InferenceConfig
from fsdlib.spec import ModelSpec

TARGET = 4.0


class TimedModel:
    """Stands in for the model inside `predict_clips` and adds up the time spent in the network."""

    def __init__(self, model: TaggingModel, fold: bool, mask: bool = True) -> None:
        self.model, self.seconds, self.fold, self.mask = model, 0.0, fold, mask

    def for_inference(self) -> TimedModel:
        """`predict_clips` asks for its inference copy: make it once (unless timing the plain network)."""
        if self.fold:
            self.model, self.fold = self.model.for_inference(), False
        return self

    def to(self, device: torch.device) -> TimedModel:
        self.model = self.model.to(device)
        return self

    def predict(self, x: torch.Tensor, activation: str, lengths: torch.Tensor | None = None) -> torch.Tensor:
        start = time.perf_counter()
        out = self.model.predict(x, activation, lengths if self.mask else None)
        self.seconds += time.perf_counter() - start
        return out


def run(model: TaggingModel, clips: Sequence[np.ndarray], kind: str, pads: tuple[int, ...], cfg: InferenceConfig,
        one_clip: bool, fold: bool = True, mask: bool = True) -> tuple[np.ndarray, float, float]:
    """Predictions, total seconds and seconds inside the network, grouped or one clip at a time."""
    timed_model = TimedModel(model, fold, mask)
    start = time.perf_counter()
    if one_clip:
        preds = np.concatenate([predict_clips(timed_model, [c], kind, "sigmoid", pads, "zero", cfg) for c in clips])
    else:
        preds = predict_clips(timed_model, clips, kind, "sigmoid", pads, "zero", cfg)
    return preds, time.perf_counter() - start, timed_model.seconds


def padding_overhead(clips: Sequence[np.ndarray], kind: str, pads: tuple[int, ...],
                     cfg: InferenceConfig) -> tuple[int, float, float]:
    """Number of groups, mean group size and the share of extra (padded) elements the grouped path computes."""
    lengths = np.array([len(c) + 2 * max(pads) for c in clips])
    groups = length_groups(lengths.tolist(), cfg, N_MELS if kind == "logmel" else 1)
    padded = sum(len(g) * lengths[g].max() for g in groups)
    return len(groups), len(clips) / len(groups), padded / lengths.sum() - 1.0


def compare(name: str, spec: ModelSpec, clips: list[np.ndarray], pads: tuple[int, ...],
            cfg: InferenceConfig) -> list[object]:
    torch.manual_seed(0)
    model = build_network(spec, N_CLASSES).eval()
    warm = sorted(clips, key=len)[:: max(1, len(clips) // 6)]  # a few lengths, so every path starts warm
    run(model, warm, spec.kind, pads, cfg, one_clip=False)
    run(model, warm, spec.kind, pads, cfg, one_clip=True)
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # as the authors' code holds it
    run(plain, warm, spec.kind, pads, cfg, one_clip=True, fold=False)
    run(model, warm, spec.kind, pads, cfg, one_clip=False, mask=False)
    grouped, t_grouped, net_grouped = run(model, clips, spec.kind, pads, cfg, one_clip=False)
    alone, t_alone, net_alone = run(plain, clips, spec.kind, pads, cfg, one_clip=True, fold=False)
    _, t_folded, _ = run(model, clips, spec.kind, pads, cfg, one_clip=True)
    unmasked, t_unmasked, _ = run(model, clips, spec.kind, pads, cfg, one_clip=False, mask=False)
    n_groups, per_group, overhead = padding_overhead(clips, spec.kind, pads, cfg)
    diff, drift = np.abs(grouped - alone), np.abs(unmasked - alone)
    print(f"  {name}: ours {t_grouped:.1f} s (network {net_grouped:.1f} s), authors' loop {t_alone:.1f} s "
          f"(network {net_alone:.1f} s): {t_alone / t_grouped:.1f}x; one clip per batch on the folded copy "
          f"{t_folded:.1f} s; without the masks {t_unmasked:.1f} s; |ours - alone| max {diff.max():.2g}, "
          f"|unmasked - alone| max {drift.max():.2g}", flush=True)
    return [name, len(clips), n_groups, per_group, f"{overhead:.0%}", t_grouped, t_grouped - net_grouped,
            t_alone, t_alone - net_alone, f"{t_alone / t_grouped:.1f}x", f"{net_alone / net_grouped:.1f}x",
            t_folded, f"{t_folded / t_grouped:.1f}x", t_unmasked, f"{t_grouped / t_unmasked - 1:+.0%}",
            f"{diff.max():.2g}", f"{drift.max():.2g}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200, help="log-mel clips (demo ResNet)")
    parser.add_argument("--wave-clips", type=int, default=200, help="waveform clips (demo EnvNet); 0 skips it")
    parser.add_argument("--min-seconds", type=float, default=0.3)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--pads", type=int, nargs="*", default=[0], help="log-mel padding TTA pads (frames)")
    parser.add_argument("--wave-pads", type=int, nargs="*", default=[0], help="waveform padding TTA pads (samples)")
    defaults = InferenceConfig()
    parser.add_argument("--tolerance", type=float, default=defaults.tolerance, help="InferenceConfig.tolerance")
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch, help="InferenceConfig.max_batch")
    parser.add_argument("--max-elements", type=int, default=defaults.max_elements,
                        help="InferenceConfig.max_elements (log-mel: frames x 128 mels; waveform: samples)")
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
    cfg = InferenceConfig(args.tolerance, args.max_batch, args.max_elements)
    print(header(f"bench_inference: full-length prediction, ours (grouped, folded) vs the authors' one-clip loop{note}"))
    print(f"clips: durations log-uniform in [{args.min_seconds}, {args.max_seconds}] s; pads {args.pads} frames, "
          f"{args.wave_pads} samples; {cfg}\n")

    rng = np.random.default_rng(args.seed)
    rows = []
    if args.clips > 0:
        seconds = durations(args.clips, args.min_seconds, args.max_seconds, rng)
        rows.append(compare("demo ResNet (A)", DEMO_RESNET, logmel_clips(seconds, rng), tuple(args.pads) or (0,),
                            cfg))
    if args.wave_clips > 0:
        seconds = durations(args.wave_clips, args.min_seconds, args.max_seconds, rng)
        rows.append(compare("demo EnvNet (D)", DEMO_ENVNET, wave_clips(seconds, rng),
                            tuple(args.wave_pads) or (0,), cfg))

    print()
    print(table(["model", "clips", "groups", "clips/group", "padding", "ours s", "of which prep s",
                 "authors' s", "of which prep s", "speed-up", "network only", "one-clip folded s",
                 "grouping alone", "unmasked s", "mask cost", "max |ours-alone|", "max |unmasked-alone|"], rows))
    print(f"\ntarget: ours at least {TARGET:.0f}x faster than the authors' loop (plain network, one clip per batch). "
          "'grouping alone': one clip per batch on the folded copy / ours. 'prep' is everything outside the "
          "network (padding, dB, standardisation, stacking).")


if __name__ == "__main__":
    main()
