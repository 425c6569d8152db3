"""Clips as network input (docs/method.md §2, §8): TTA padding, and the dB scaling of log-mels, one clip in numpy
and batched in torch.

The torch inference path (fsdlib/inference.py) pads clips with these functions and converts its batches with
`logmel_to_input`, as training does (fsdlib/train.py); the ONNX tagger's front end (fsdlib/onnx_tagger.py) converts
one clip with `power_to_input`. Importing this module does not import torch (the ONNX tagger runs without it):
`logmel_to_input` imports it when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

DB_FLOOR_POWER = 1e-10  # power floor before dB (-100 dB)
DB_RANGE = 80.0  # dB kept below each clip's maximum
STD_EPS = 1e-7


def pad_clip(clip: np.ndarray, pad: int, mode: str, fill: float) -> np.ndarray:
    """Pad both ends of the time axis (axis 0) by `pad`: with `fill`, or with copies of the clip (loop)."""
    if pad <= 0:
        return clip
    widths = [(pad, pad)] + [(0, 0)] * (clip.ndim - 1)
    if mode == "loop" and len(clip) > 0:
        return np.pad(clip, widths, mode="wrap")
    return np.pad(clip, widths, mode="constant", constant_values=fill)


def silence_floor(power: np.ndarray) -> float:
    """The power a TTA pad of a log-mel clip takes: its silence floor (max power x 1e-8, i.e. max dB - 80)."""
    return max(float(power.max(initial=0.0)) * 10.0 ** (-DB_RANGE / 10.0), DB_FLOOR_POWER)


def power_to_input(power: np.ndarray) -> np.ndarray:
    """One clip's power (n_mels, frames) as network input, float32: dB with an 80 dB range below its maximum,
    standardised by its own mean and std (`logmel_to_input` for one unpadded clip)."""
    db = np.float32(10.0) * np.log10(np.maximum(power.astype(np.float32), np.float32(DB_FLOOR_POWER)))
    db = np.maximum(db, db.max() - np.float32(DB_RANGE))
    centred = db - db.mean(dtype=np.float32)
    std = np.sqrt(np.square(centred).mean(dtype=np.float32))
    return centred / (std + np.float32(STD_EPS))


def logmel_to_input(power: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Power (B, n_mels, T) → network input (B, 1, n_mels, T): dB with an 80 dB range below each
    sample's maximum, then standardised by each sample's own mean and std (a silent sample gives 0).

    With `lengths` (B,), only each sample's first lengths[i] frames count for its statistics, and the frames
    after them take the sample's quietest value (its silence), so padded batches convert like single clips.
    """
    import torch  # here, not at the top: the ONNX tagger imports this module without torch

    db = 10.0 * torch.log10(power.clamp(min=DB_FLOOR_POWER))
    if lengths is None:
        peak = db.amax(dim=(1, 2), keepdim=True)
        db = torch.maximum(db, peak - DB_RANGE)
        centred = db - db.mean(dim=(1, 2), keepdim=True)
        std = centred.square().mean(dim=(1, 2), keepdim=True).sqrt()  # several times faster than Tensor.std on CPU
        return (centred / (std + STD_EPS))[:, None]
    valid = (torch.arange(db.shape[2], device=db.device)[None, :] < lengths.to(db.device)[:, None])[:, None, :]
    count = (lengths.to(db.dtype) * db.shape[1]).view(-1, 1, 1)
    peak = db.masked_fill(~valid, -torch.inf).amax(dim=(1, 2), keepdim=True)
    db = torch.maximum(db, peak - DB_RANGE)
    mean = (db * valid).sum(dim=(1, 2), keepdim=True) / count
    std = (((db - mean) * valid) ** 2).sum(dim=(1, 2), keepdim=True).div(count).sqrt()
    x = (db - mean) / (std + STD_EPS)
    silence = x.masked_fill(~valid, torch.inf).amin(dim=(1, 2), keepdim=True)
    return torch.where(valid, x, silence)[:, None]
