"""Training augmentations (docs/method.md §3, §11): batched torch ops on the batch side, after the loader's crops
(fsdlib/batches.py), and the batch side of the authors' time-scaled waveform crop.

Every random draw in the batched functions comes from the `torch.Generator` passed in, so a seeded
generator reproduces a batch exactly. Each augmentation is applied to each sample with probability p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fsdlib.augment_settings import LogMelAugmentConfig, WaveAugmentConfig
from fsdlib.device import to_device

# BC learning's clip gain (Tokozume et al.; the authors' utils.compute_gain at 44.1 kHz): the mean power of
# 4096-sample windows every 2048 samples of the [-1, 1) waveform, in dB, floored at -80 dB, maximised over windows.
# (The authors apply it to int16 values, which moves the floor 90 dB lower: only near-silent clips differ.)
BC_WINDOW = 4096
BC_HOP = 2048
BC_MIN_DB = -80.0


# ---------------------------------------------------------------------------------------------
# The authors' time-scaled waveform crop, batch side: gathered from the loader's windows (fsdlib/batches.py).


@dataclass(frozen=True)
class ScaledCrop:
    """What the batch side needs, besides the loader's (B, W) int16 source windows, to gather the authors'
    time-scaled crops (docs/method.md §11) on the device (`gather_scaled_crop`).

    `factor` (B,) float64: each clip's time-scale factor f. `index` (B, 4) int64, per sample: `shift`, the scaled
    clip's sample at crop sample 0 (negative inside the left padding); `scaled`, the scaled clip's length int(n·f);
    `origin`, the clip sample at window sample 0; `period`, the clip's length n where the crop loops around the
    scaled clip (pad_mode "loop") and the window holds the clip circularly from `origin`, else 0 (the window holds
    clip[origin:origin + W], zeros past the clip's end). `length`: the crop's length L.
    """

    factor: np.ndarray
    index: np.ndarray
    length: int


CPU_GATHER_ELEMENTS = 1 << 16  # crop samples gathered at a time on the CPU (`gather_scaled_crop`)


def gather_scaled_crop(window: torch.Tensor, crop: ScaledCrop) -> torch.Tensor:
    """Batch side of the authors' waveform crop (docs/method.md §11), batched on the windows' device: crop sample j
    is sample s = shift + j of the scaled clip (wrapped into it where the crop loops), zero outside it, else clip
    sample floor(s / f) (nearest neighbour, the division in float64), scaled to float32 in [-1, 1): (B, L).

    `window` (B, W) int16 and `crop` come from `fsdlib.batches.scaled_crop_windows`, and its draws decide the crops
    bit for bit. Nothing is read back from the device. On the CPU the rows go a few
    at a time, so that the (rows, L) temporaries stay in the cache.
    """
    device = window.device
    factor = to_device(torch.from_numpy(crop.factor), device)
    index = to_device(torch.from_numpy(crop.index), device)
    loops = bool(crop.index[:, 3].any())  # decided on the host: the index's numpy copy
    out = torch.empty(len(window), crop.length, dtype=torch.float32, device=device)
    rows = max(1, CPU_GATHER_ELEMENTS // max(crop.length, 1)) if device.type == "cpu" else max(len(window), 1)
    for first in range(0, len(window), rows):
        chunk = slice(first, first + rows)
        _gather_scaled_rows(window[chunk], factor[chunk], index[chunk], loops, out[chunk])
    return out


def _gather_scaled_rows(
    window: torch.Tensor, factor: torch.Tensor, index: torch.Tensor, loops: bool, out: torch.Tensor
) -> None:
    """`gather_scaled_crop` for some rows, into `out` (rows, L)."""
    shift, scaled, origin, period = (column[:, None] for column in index.unbind(1))
    position = shift + torch.arange(out.shape[1], device=out.device)
    if loops:  # rows that loop take the position wrapped into the scaled clip
        position = torch.where(period > 0, position.remainder(scaled.clamp(min=1)), position)
    outside = (position < 0) | (position >= scaled)
    source = position.clamp_(min=0).double().div_(factor[:, None]).long()  # truncates, as numpy's astype does
    k = source.sub_(origin)
    if loops:  # the window holds the clip circularly from `origin`: a source before it lies one period on
        k = torch.where(k < 0, k + period, k)
    values = window.gather(1, k.clamp_(0, window.shape[1] - 1))
    torch.div(values, 32768.0, out=out)  # exact: int16 / 2^15 in float32
    out.masked_fill_(outside, 0.0)


# ---------------------------------------------------------------------------------------------
# Batch side: vectorised torch, random numbers from the generator, drawn where it lives (in training, on the batch's
# device) and moved to the batch's device if elsewhere; no draw is read back on the host but the Beta seed.


def _uniform(gen: torch.Generator, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    """n draws from U(low, high) in float32."""
    return (low + (high - low) * torch.rand(n, generator=gen, device=gen.device)).to(device)


def _chosen(gen: torch.Generator, n: int, p: float, device: torch.device) -> torch.Tensor:
    """Boolean mask: which of n samples get an augmentation applied with probability p."""
    return _uniform(gen, n, 0.0, 1.0, device) < p


def _beta(gen: torch.Generator, n: int, alpha: float, device: torch.device) -> torch.Tensor:
    """n draws from Beta(alpha, alpha), seeded from the torch generator (torch's Beta takes none)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
    lam = np.random.default_rng(seed).beta(alpha, alpha, size=n)
    return torch.as_tensor(lam, dtype=torch.float32, device=device)


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample values (B,) to broadcast against `like` (B, ...)."""
    return values.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def _mixup_pairs(
    batch: int, p: float, alpha: float, gen: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's partner and mixing ratio λ ~ Beta(alpha, alpha) (1 for samples not chosen). Partners
    come from rolling the batch by a random non-zero shift, so none is itself; needs batch >= 2."""
    shift = torch.randint(1, batch, (1,), generator=gen, device=gen.device).to(device)
    partner = (torch.arange(batch, device=device) + shift) % batch
    lam = _beta(gen, batch, alpha, device)
    lam = torch.where(_chosen(gen, batch, p, device), lam, torch.ones_like(lam))
    return partner, lam


def _mix_targets(targets: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    return _broadcast(lam, targets) * targets + _broadcast(1 - lam, targets) * targets[partner]


def mixup(
    x: torch.Tensor, targets: torch.Tensor, p: float, alpha: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each chosen sample with a different sample of the batch by λ ~ Beta(alpha, alpha), inputs and
    labels alike. Partners come from rolling the batch by a random non-zero shift, so none is itself."""
    batch = len(x)
    if batch < 2:
        return x, targets
    partner, lam = _mixup_pairs(batch, p, alpha, gen, x.device)
    mixed = _broadcast(lam, x) * x + _broadcast(1 - lam, x) * x[partner]
    return mixed, _mix_targets(targets, partner, lam)


def bc_gain_db(wave: torch.Tensor) -> torch.Tensor:
    """Each waveform's gain for BC mixing, (B, L) → (B,): the largest mean power in dB over windows of
    BC_WINDOW samples every BC_HOP samples (one window over the whole clip if shorter), floored at BC_MIN_DB."""
    window = min(BC_WINDOW, wave.shape[-1])
    power = wave.unfold(-1, window, BC_HOP).square().mean(dim=-1).amax(dim=-1)
    return 10.0 * torch.log10(power.clamp(min=10.0 ** (BC_MIN_DB / 10.0)))


def bc_mixup(
    wave: torch.Tensor, targets: torch.Tensor, p: float, alpha: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BC-learning mixing (Tokozume et al.; docs/method.md §11) of each chosen waveform x1 with a different
    one x2 of the batch, paired and drawn as `mixup` does: with r ~ Beta(alpha, alpha) and g1, g2 the clips'
    `bc_gain_db`, t = 1 / (1 + 10^((g1 - g2)/20) · (1 - r)/r) and x = (t·x1 + (1 - t)·x2) / sqrt(t² + (1 - t)²),
    so that the two clips are heard in the ratio r : 1 - r whatever their loudness; labels mix by r.
    A batch of one is left as it is."""
    batch = len(wave)
    if batch < 2:
        return wave, targets
    partner, r = _mixup_pairs(batch, p, alpha, gen, wave.device)
    gain = bc_gain_db(wave)
    # t written as r / (r + k·(1 - r)): finite for r = 0 and exactly 1 for r = 1 (samples not chosen).
    t = r / (r + 10.0 ** ((gain - gain[partner]) / 20.0) * (1 - r))
    norm = torch.sqrt(t.square() + (1 - t).square())
    mixed = (_broadcast(t, wave) * wave + _broadcast(1 - t, wave) * wave[partner]) / _broadcast(norm, wave)
    return mixed, _mix_targets(targets, partner, r)


def self_mixup(
    wave: torch.Tensor, targets: torch.Tensor, p: float, alpha: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' waveform mixup (docs/method.md §15): their code BC-mixed each clip with itself, so with r drawn
    and paired as `bc_mixup` does, the labels mix by r while the audio is only scaled by 1 / sqrt(r² + (1 - r)²)."""
    batch = len(wave)
    if batch < 2:
        return wave, targets
    partner, r = _mixup_pairs(batch, p, alpha, gen, wave.device)
    return wave / _broadcast(torch.sqrt(r.square() + (1 - r).square()), wave), _mix_targets(targets, partner, r)


def _apply_gain(x: torch.Tensor, factor: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Multiply each chosen sample by its factor; the others stay as they are."""
    factor = torch.where(_chosen(gen, len(x), p, x.device), factor, torch.ones_like(factor))
    return x * _broadcast(factor, x)


def random_gain(x: torch.Tensor, p: float, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """Multiply each chosen sample by a factor from U(low, high) (log-mel: on power)."""
    return _apply_gain(x, _uniform(gen, len(x), low, high, x.device), p, gen)


def random_gain_db(x: torch.Tensor, p: float, max_db: float, gen: torch.Generator) -> torch.Tensor:
    """Multiply each chosen sample by 10^(U(-max_db, max_db)/20) (waveform amplitude)."""
    db = _uniform(gen, len(x), -max_db, max_db, x.device)
    return _apply_gain(x, 10.0 ** (db / 20.0), p, gen)


def additional_crop(
    power: torch.Tensor, valid: torch.Tensor | np.ndarray, p: float, fraction: tuple[float, float], gen: torch.Generator,
    mode: str = "time",
) -> torch.Tensor:
    """Keep a random sub-window of each chosen sample's content span, `fraction` of its length, and
    zero every other frame. `valid` is (B, 2): [start, stop) frames of content.

    Mode "authors" (docs/method.md §15): a sample whose content fills the crop (a clip longer than it) keeps instead
    the mel bins [s, s + k) with k = ⌊rate · frames⌋ and s uniform in 0..frames - k - 1 (0 when k = frames), zeroing
    the others: with 128 bins and long crops that zeroes the lowest s bins, or every bin when s ≥ 128."""
    batch, n_mels, frames = power.shape
    valid = torch.as_tensor(valid, device=power.device)
    span = valid[:, 1] - valid[:, 0]
    rate = _uniform(gen, batch, *fraction, power.device)
    position = _uniform(gen, batch, 0.0, 1.0, power.device)
    kept = torch.minimum(torch.ceil(rate * span).long().clamp(min=1), span)
    start = valid[:, 0] + torch.floor(position * (span - kept + 1)).long()
    time = torch.arange(frames, device=power.device)
    keep = ((time >= start[:, None]) & (time < (start + kept)[:, None]))[:, None, :]
    if mode == "authors":
        band = torch.floor(rate * frames).long()
        low = torch.floor(position * (frames - band)).long()
        mel = torch.arange(n_mels, device=power.device)
        keep_bins = ((mel >= low[:, None]) & (mel < (low + band)[:, None]))[:, :, None]
        fills = (span >= frames)[:, None, None]
        keep = torch.where(fills, keep_bins.expand(-1, -1, frames), keep.expand(-1, n_mels, -1))
    keep = keep | ~_chosen(gen, batch, p, power.device)[:, None, None]
    return power * keep.to(power.dtype)


def freq_mask(power: torch.Tensor, p: float, widths: tuple[int, int], gen: torch.Generator,
              mode: str = "paper") -> torch.Tensor:
    """Zero a band of U{widths} consecutive mel bins (clamped to n_mels) in each chosen sample.

    Mode "authors" (docs/method.md §15): the bins [c - w, c + w) clipped to the spectrogram, c uniform over the bins
    and w uniform in widths[0]..widths[1] - 1: 8 to 62 bins for (8, 32), wider on average than the paper's band."""
    batch, n_mels = len(power), power.shape[1]
    mel = torch.arange(n_mels, device=power.device)
    if mode == "authors":
        half = widths[0] + torch.floor(_uniform(gen, batch, 0.0, 1.0, power.device) * (widths[1] - widths[0])).long()
        centre = torch.floor(_uniform(gen, batch, 0.0, 1.0, power.device) * n_mels).long()
        start = (centre - half).clamp(min=0)
        width = (centre + half).clamp(max=n_mels) - start
    else:
        low, high = min(widths[0], n_mels), min(widths[1], n_mels)
        width = low + torch.floor(_uniform(gen, batch, 0.0, 1.0, power.device) * (high - low + 1)).long()
        start = torch.floor(_uniform(gen, batch, 0.0, 1.0, power.device) * (n_mels - width + 1)).long()
    masked = (mel >= start[:, None]) & (mel < (start + width)[:, None])
    masked &= _chosen(gen, batch, p, power.device)[:, None]
    return power * (~masked)[:, :, None].to(power.dtype)


def augment_logmel(
    power: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor | np.ndarray,
    cfg: LogMelAugmentConfig,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment cropped power spectrograms (B, n_mels, T) and their targets (B, C): additional crop,
    mixup, gain, frequency mask. `valid` is the (B, 2) content span from `fsdlib.batches.crop_logmel`."""
    if cfg.additional_crop:
        power = additional_crop(power, valid, cfg.p, cfg.additional_crop_range, gen, cfg.additional_crop_mode)
    if cfg.mixup:
        power, targets = mixup(power, targets, cfg.p, cfg.mixup_alpha, gen)
    if cfg.gain:
        power = random_gain(power, cfg.p, *cfg.gain_range, gen)
    if cfg.freq_mask:
        power = freq_mask(power, cfg.p, cfg.freq_mask_range, gen, cfg.freq_mask_mode)
    return power, targets


def time_scale(wave: torch.Tensor, p: float, scale_range: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Stretch each chosen cropped sample by a log-uniform factor in scale_range (linear resampling), then
    crop a random window (longer) or place it at a random offset in zeros (shorter) to keep L samples."""
    batch, length = wave.shape
    log_low, log_high = math.log(scale_range[0]), math.log(scale_range[1])
    factor = torch.exp(_uniform(gen, batch, log_low, log_high, wave.device))
    stretched = torch.round(factor * length).long().clamp(min=2)
    excess = stretched - length
    offset = (
        torch.minimum(excess, torch.zeros_like(excess))
        + torch.floor(_uniform(gen, batch, 0.0, 1.0, wave.device) * (excess.abs() + 1)).long()
    )
    # Output sample j is stretched sample u = j + offset, found at source position u·(L-1)/(Ls-1).
    u = torch.arange(length, device=wave.device)[None, :] + offset[:, None]
    source = u.to(wave.dtype) * ((length - 1) / (stretched - 1).to(wave.dtype))[:, None]
    inside = (u >= 0) & (u < stretched[:, None])
    source = source.clamp(0, length - 1)
    left = source.floor().long()
    right = (left + 1).clamp(max=length - 1)
    frac = source - left.to(wave.dtype)
    resampled = (1 - frac) * wave.gather(1, left) + frac * wave.gather(1, right)
    resampled = resampled * inside.to(wave.dtype)
    return torch.where(_chosen(gen, batch, p, wave.device)[:, None], resampled, wave)


def augment_wave(
    wave: torch.Tensor, targets: torch.Tensor, cfg: WaveAugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment cropped waveforms (B, L) and targets (B, C): mixup with another sample (linear or BC), time
    scaling (unless the loader already scaled the whole clip: order "authors"), gain of ±gain_db dB."""
    if cfg.mixup:
        mix = {"linear": mixup, "bc": bc_mixup, "authors": self_mixup}[cfg.mixup_mode]
        wave, targets = mix(wave, targets, cfg.p, cfg.mixup_alpha, gen)
    if cfg.time_scale and cfg.order == "crop_first":
        wave = time_scale(wave, cfg.p, cfg.scale_range, gen)
    if cfg.gain:
        wave = random_gain_db(wave, cfg.p, cfg.gain_db, gen)
    return wave, targets
