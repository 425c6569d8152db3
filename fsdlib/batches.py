"""Loader side of training (docs/method.md §3, §5, §6): what a fold trains on, the crops cut from its clips, its batches.

Numpy slicing of memory-mapped stores only; the augmentations run later, in torch, on the batch side. The authors'
whole-clip time scaling of waveforms (docs/method.md §11) comes before the crop: the loader draws it and copies the
source samples each crop needs, the batch side resamples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fsdlib.augment import ScaledCrop, WaveAugmentConfig
from fsdlib.errors import FsdError
from fsdlib.spec import ModelSpec
from fsdlib.store import FeatureStore

PadMode = Literal["zero", "loop"]


@dataclass
class FoldData:
    """What one (model, fold) trains on: stores and targets, and which curated clips are held out."""

    curated: FeatureStore
    curated_targets: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    noisy: FeatureStore | None = None
    noisy_targets: np.ndarray | None = None
    spl_targets: np.ndarray | None = None  # (n_noisy, C) soft pseudo labels for this student fold
    spl_noisy_idx: np.ndarray | None = None  # noisy clips allowed in SPL batches (not in the validation fold)
    truth: np.ndarray | None = None  # labels validation scores against, when the targets are not labels (distillation)

    @property
    def val_truth(self) -> np.ndarray:
        """The labels of the held-out clips."""
        return (self.curated_targets if self.truth is None else self.truth)[self.val_idx]

    def spl_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """SPL sampling pool: curated training clips (weight 1) then allowed noisy clips (N_cur / N_noisy).

        Returns pool entries as (is_noisy, index) pairs in one (n, 2) array and their probabilities, so
        curated and pseudo-labelled noisy clips are drawn 1:1 in expectation.
        """
        cur, noisy = self.train_idx, self.spl_noisy_idx
        pool = np.concatenate([np.stack([np.zeros_like(cur), cur], 1), np.stack([np.ones_like(noisy), noisy], 1)])
        weights = np.concatenate([np.ones(len(cur)), np.full(len(noisy), len(cur) / max(len(noisy), 1))])
        return pool, weights / weights.sum()


@dataclass(frozen=True)
class Part:
    """One part of a training batch: cropped clips, their valid-frame masks (log-mel only) and targets.

    In the authors' waveform order (docs/method.md §11) x holds each clip's source window and `scaled` how the
    batch side gathers the time-scaled crops from it (`fsdlib.augment.gather_scaled_crop`, on the device).
    """

    x: np.ndarray  # (B, frames, n_mels) float32 power log-mels, (B, samples) float32 waveforms, or (B, W) int16 windows
    valid: np.ndarray | None  # (B, 2) [start, stop) frames of real content in each crop (log-mel only)
    y: np.ndarray  # (B, C) targets
    scaled: ScaledCrop | None = None  # with the (B, W) int16 windows: factors and offsets of the scaled crops


@dataclass(frozen=True)
class Batch:
    """One training step's clips: curated always, noisy when multitask, soft-pseudo-labelled when SPL is on."""

    curated: Part
    noisy: Part | None = None
    spl: Part | None = None

    def parts(self) -> dict[str, Part]:
        """The parts present, by name, in the fixed order curated, noisy, spl."""
        named = {"curated": self.curated, "noisy": self.noisy, "spl": self.spl}
        return {name: part for name, part in named.items() if part is not None}


def cycling_indices(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of indices into n items: shuffled passes, each item once per pass."""
    carry = np.empty(0, dtype=np.int64)
    while True:
        while len(carry) < batch:
            carry = np.concatenate([carry, rng.permutation(n)])
        yield carry[:batch]
        carry = carry[batch:]


def check_epoch(spec: ModelSpec, data: FoldData, steps_per_epoch: int) -> None:
    """Refuse an epoch the fold cannot fill (docs/method.md §5: an epoch is one pass over the curated training fold).

    Every step takes `spec.batch` clips of the pass, so `steps_per_epoch` steps need that many times the batch;
    the one exception is a fold smaller than a batch, trained as `train_fold` does, one short step per epoch.
    A multitask step also draws a noisy batch, so the noisy store must hold clips.
    """
    n, batch = len(data.train_idx), spec.batch
    if steps_per_epoch < 1:
        raise FsdError(f"an epoch needs at least 1 step, got {steps_per_epoch}")
    if n == 0 or steps_per_epoch > max(1, n // batch):
        steps = f"{steps_per_epoch} step{'s' if steps_per_epoch > 1 else ''}"
        need = "needs" if steps_per_epoch == 1 else "need"
        raise FsdError(f"{steps} of batch {batch} {need} {steps_per_epoch * batch} training clips, the fold has {n}")
    if spec.multitask and data.noisy is not None and len(data.noisy) == 0:
        raise FsdError("multitask steps draw a noisy batch each, but the noisy store has no clips")


# ---------------------------------------------------------------------------------------------
# Crops: numpy slicing of one part's clips.


def crop_logmel(
    clips: list[np.ndarray], length: int, rng: np.random.Generator, pad_mode: PadMode = "zero"
) -> tuple[np.ndarray, np.ndarray]:
    """Crop (frames, n_mels) clips to `length` frames: a random window of a longer clip, a shorter one
    placed at a random offset in zeros ("zero") or tiled from a random phase ("loop").

    Returns the batch (B, length, n_mels) float32 and `valid` (B, 2) int64: the [start, stop) frames
    of real content in each crop, which the additional crop of `fsdlib.augment.augment_logmel` stays within.
    """
    n_mels = clips[0].shape[1]
    batch = np.zeros((len(clips), length, n_mels), dtype=np.float32)
    valid = np.zeros((len(clips), 2), dtype=np.int64)
    for i, clip in enumerate(clips):
        frames = len(clip)
        if frames >= length:
            start = rng.integers(0, frames - length + 1)
            batch[i] = clip[start : start + length]
            valid[i] = (0, length)
        elif pad_mode == "loop" and frames > 0:
            phase = rng.integers(0, frames)
            batch[i] = np.take(clip, np.arange(phase, phase + length) % frames, axis=0)
            valid[i] = (0, length)
        else:
            offset = rng.integers(0, length - frames + 1)
            batch[i, offset : offset + frames] = clip
            valid[i] = (offset, offset + frames)
    return batch, valid


def crop_wave(clips: list[np.ndarray], length: int, rng: np.random.Generator, pad_mode: PadMode = "zero") -> np.ndarray:
    """Pad each int16 clip with length/2 samples on both sides (zeros, or the clip wrapped around for
    "loop"), take a random window of `length`, and scale to float32 in [-1, 1)."""
    left, right = length // 2, length - length // 2
    batch = np.zeros((len(clips), length), dtype=np.float32)
    for i, clip in enumerate(clips):
        mode = "wrap" if pad_mode == "loop" and len(clip) > 0 else "constant"
        padded = np.pad(clip, (left, right), mode=mode)
        start = rng.integers(0, len(padded) - length + 1)
        batch[i] = padded[start : start + length] / 32768.0
    return batch


def scaled_window_width(length: int, scale_range: tuple[float, float]) -> int:
    """W, the source samples a time-scaled crop of `length` can need: a crop at factor f spans (L - 1)/f + 1
    clip samples (L/f + 1 where it loops around the clip's end), f >= min(low, 1) (1: clips not chosen)."""
    return math.ceil(length / min(scale_range[0], 1.0)) + 2


def scaled_crop_windows(
    clips: list[np.ndarray],
    length: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.8, 1.25),
    p: float = 1.0,
    pad_mode: PadMode = "zero",
) -> tuple[np.ndarray, ScaledCrop]:
    """Loader side of the authors' waveform crop (docs/method.md §11): draw each clip's time-scale factor and crop
    window, and copy the clip samples the crop reads into a (B, W) int16 window (`scaled_window_width`); the batch
    side gathers the crops from them (`fsdlib.augment.gather_scaled_crop`). Costs a copy of W samples per clip,
    whatever its length.

    Draws from `rng`, in this order: u = rng.random(B) (f = lo·(hi/lo)^u), chosen = rng.random(B) < p (the
    others keep f = 1, which is exactly `crop_wave`'s crop), then for each clip in turn its window start
    rng.integers(0, int(n·f) + 1) in the scaled clip padded by L/2 on the left.
    """
    low, high = scale_range
    if not 0 < low <= high:
        raise FsdError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    factor = low * (high / low) ** rng.random(len(clips))
    factor = np.where(rng.random(len(clips)) < p, factor, 1.0)
    width = scaled_window_width(length, scale_range)
    windows = np.zeros((len(clips), width), dtype=np.int16)
    index = np.zeros((len(clips), 4), dtype=np.int64)
    for i, (clip, f) in enumerate(zip(clips, factor, strict=True)):
        n = len(clip)
        scaled = int(n * f)
        shift = int(rng.integers(0, scaled + 1)) - length // 2
        if pad_mode == "loop" and scaled > 0:
            # The crop's first sample, wrapped into the scaled clip, names the window's first clip sample; the
            # window then runs on around the clip (the crop's later samples, wrapped, come back to its start).
            origin = int((shift % scaled) / f)
            _copy_circular(clip, origin, windows[i])
            index[i] = shift, scaled, origin, n
        else:
            first = max(shift, 0)  # the crop's first sample inside the scaled clip, if any
            origin = int(first / f) if first < scaled else 0
            if first < scaled:
                part = clip[origin : origin + width]
                windows[i, : len(part)] = part
            index[i] = shift, scaled, origin, 0
    return windows, ScaledCrop(factor, index, length)


def _copy_circular(clip: np.ndarray, origin: int, out: np.ndarray) -> None:
    """out[k] = clip[(origin + k) % len(clip)] for every k, by slices."""
    n, width = len(clip), len(out)
    if n >= width:
        head = min(width, n - origin)
        out[:head] = clip[origin : origin + head]
        out[head:] = clip[: width - head]
    else:
        out[:] = np.resize(np.concatenate([clip[origin:], clip[:origin]]), width)



class BatchMaker:
    """Draws clip indices and crops memory-mapped clips, all randomness from one seeded generator."""

    def __init__(self, spec: ModelSpec, data: FoldData, steps_per_epoch: int, seed: int) -> None:
        check_epoch(spec, data, steps_per_epoch)  # an impossible epoch fails here, not as an empty crop later
        self.spec, self.data, self.steps = spec, data, steps_per_epoch
        self.rng = np.random.default_rng(seed)
        self.noisy = (
            cycling_indices(len(data.noisy), spec.batch, self.rng)
            if spec.multitask and data.noisy is not None else None
        )
        self.spl = data.spl_pool() if data.spl_targets is not None else None
        augment = spec.augment_config()
        self.wave_scaling = augment if isinstance(augment, WaveAugmentConfig) and augment.scales_on_loader else None

    def _crop(self, clips: list[np.ndarray], length: int, y: np.ndarray) -> Part:
        """One part's crops: log-mel windows, or waveform windows (of the time-scaled clips in the authors' order)."""
        spec, scaling = self.spec, self.wave_scaling
        if spec.kind == "logmel":  # the family table (fsdlib/families.py): frames of log-mel, or samples
            x, valid = crop_logmel(clips, length, self.rng, spec.pad_mode)
            return Part(x, valid, y)
        if scaling is not None:  # the loader only draws and copies; the device resamples (Trainer.prepare)
            x, scaled = scaled_crop_windows(clips, length, self.rng, scaling.scale_range, scaling.p, spec.pad_mode)
            return Part(x, None, y, scaled)
        return Part(crop_wave(clips, length, self.rng, spec.pad_mode), None, y)

    def epoch(self) -> Iterator[Batch]:
        """One epoch: a pass over the curated training fold, each step with a noisy batch when multitask."""
        d = self.data
        perm = self.rng.permutation(d.train_idx)
        for step in range(self.steps):
            idx = perm[step * self.spec.batch : (step + 1) * self.spec.batch]
            length = int(self.rng.choice(self.spec.crops)) if self.spec.crops else self.spec.crop
            curated = self._crop([d.curated[int(i)] for i in idx], length, d.curated_targets[idx])
            noisy = None
            if self.noisy is not None:
                nidx = next(self.noisy)
                noisy = self._crop([d.noisy[int(i)] for i in nidx], length, d.noisy_targets[nidx])
            yield Batch(curated, noisy, self._spl_part(length) if self.spl is not None else None)

    def _spl_part(self, length: int) -> Part:
        """Curated clips (their labels) and pseudo-labelled noisy clips, 1:1 in expectation."""
        d, (pool, prob) = self.data, self.spl
        picks = pool[self.rng.choice(len(pool), size=self.spec.batch, p=prob)]
        stores = (d.curated, d.noisy)
        targets = np.stack([d.curated_targets[i] if s == 0 else d.spl_targets[i] for s, i in picks])
        return self._crop([stores[s][int(i)] for s, i in picks], length, targets)
