"""One inference path for OOF predictions, pseudo labels, test predictions and tagging (docs/method.md §8).

Full-length clips, sorted by length and grouped so that padding stays within a tolerance, with caps on
batch size and padded elements; padding TTA averages predictions over a list of pad lengths. The networks are
told each clip's length and ignore the group padding, so a clip's scores do not depend on its batch-mates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import torch

from fsdlib.clip_input import logmel_to_input, pad_clip, silence_floor
from fsdlib.device import autocast, resolve_device, to_device
from fsdlib.errors import FsdError
from fsdlib.heap import trim_above
from fsdlib.models.heads import TaggingModel
from fsdlib.settings import InferenceConfig

Kind = Literal["logmel", "wave"]


def length_groups(lengths: Sequence[int], cfg: InferenceConfig, inner: int = 1) -> list[np.ndarray]:
    """Indices of clips grouped by similar length (shortest first); each group is one batch."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    for pos in range(1, len(order) + 1):
        if pos < len(order):
            shortest, candidate = lengths[order[start]], lengths[order[pos]]
            size = pos - start + 1
            fits = (
                candidate <= max(shortest, 1) * (1.0 + cfg.tolerance)
                and size <= cfg.max_batch
                and size * candidate * inner <= cfg.max_elements
            )
            if fits:
                continue
        groups.append(order[start:pos])
        start = pos
    return groups


def _batch(clips: list[np.ndarray], idx: np.ndarray, kind: Kind, pad: int, pad_mode: str,
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the clips of one group, each padded for TTA, then to the group's longest; and each one's length.

    Log-mel TTA pads sit at each clip's silence floor (max power × 1e-8, i.e. max dB − 80) before the
    conversion. The group padding after a clip is not part of it: the networks ignore it given the lengths.
    """
    if kind == "logmel":
        padded = [pad_clip(clips[i], pad, pad_mode, silence_floor(clips[i])) for i in idx]
        lengths = torch.tensor([len(p) for p in padded])
        power = torch.zeros((len(padded), padded[0].shape[1], int(lengths.max())))
        for row, p in enumerate(padded):
            power[row, :, : len(p)] = torch.from_numpy(np.ascontiguousarray(p.T, dtype=np.float32))
        return logmel_to_input(power, lengths), lengths
    waves = [pad_clip(clips[i].astype(np.float32) / 32768.0, pad, pad_mode, 0.0) for i in idx]
    lengths = torch.tensor([len(w) for w in waves])
    out = torch.zeros((len(waves), int(lengths.max())))
    for row, w in enumerate(waves):
        out[row, : len(w)] = torch.from_numpy(w)
    return out, lengths


@torch.inference_mode()
def predict_clips(
    model: TaggingModel,
    clips: Sequence[np.ndarray],
    kind: Kind,
    activation: str,
    pads: Sequence[int],
    pad_mode: str,
    cfg: InferenceConfig,
    device: torch.device | str = "auto",
) -> np.ndarray:
    """Curated-head probabilities (n_clips, n_classes) at full length, averaged over `pads`, in input order.

    `clips` are power log-mels (frames, n_mels) or int16 waveforms; an empty `pads` means no TTA (pad 0).
    """
    pads = list(pads) or [0]
    clips = list(clips)
    if not clips:
        raise FsdError("no clips to predict")
    device = resolve_device(device) if isinstance(device, str) else device
    model = model.for_inference().to(device)  # a folded, channels-last copy on the device (made once: fusion.py)
    inner = clips[0].shape[1] if kind == "logmel" else 1
    if kind != "logmel":
        cfg = replace(cfg, max_elements=min(cfg.max_elements, cfg.max_samples))
    lengths = [len(c) + 2 * max(pads) for c in clips]
    total: np.ndarray | None = None
    for pad in pads:
        preds: np.ndarray | None = None
        # Longest group first: later batches fit in the memory the earlier ones freed. Shortest first, with the
        # stages' glibc settings (keep freed memory, stages/common.py), the heap grew with the number of clips
        # (demo ResNet: 1.1 GB after 200 clips, 2.3 GB after 800; longest first 1.1 and 1.2), and `max_heap`
        # bounds what growth is left (docs/results.md, Full FSDKaggle2019).
        for idx in reversed(length_groups(lengths, cfg, inner)):
            x, clip_lengths = _batch(clips, idx, kind, pad, pad_mode)
            x = to_device(x, device, channels_last=True)
            with autocast(device):
                p = model.predict(x, activation, clip_lengths).float().cpu().numpy()
            if preds is None:
                preds = np.empty((len(clips), p.shape[1]), dtype=np.float64)
            preds[idx] = p
            trim_above(cfg.max_heap)
        total = preds if total is None else total + preds
    out = (total / len(pads)).astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise FsdError("model produced non-finite predictions (diverged weights?)")
    return np.clip(out, 0.0, 1.0)
