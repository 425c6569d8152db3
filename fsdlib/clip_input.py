"""A log-mel clip as network input, in numpy: TTA padding and the dB scaling (docs/method.md §2, §8).

The torch inference path (fsdlib/inference.py) pads clips with these functions; the ONNX tagger's front end
(fsdlib/onnx_tagger.py) also converts one clip with `power_to_input`, which `fsdlib.augment.logmel_to_input` computes
batched in torch.
"""

from __future__ import annotations

import numpy as np

from fsdlib.spec import check_pad_mode

DB_FLOOR_POWER = 1e-10  # power floor before dB (-100 dB)
DB_RANGE = 80.0  # dB kept below each clip's maximum
STD_EPS = 1e-7


def pad_clip(clip: np.ndarray, pad: int, mode: str, fill: float) -> np.ndarray:
    """Pad both ends of the time axis (axis 0) by `pad`: with `fill`, or with copies of the clip (loop)."""
    check_pad_mode(mode)
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
    standardised by its own mean and std (`fsdlib.augment.logmel_to_input` for one unpadded clip)."""
    db = np.float32(10.0) * np.log10(np.maximum(power.astype(np.float32), np.float32(DB_FLOOR_POWER)))
    db = np.maximum(db, db.max() - np.float32(DB_RANGE))
    centred = db - db.mean(dtype=np.float32)
    std = np.sqrt(np.square(centred).mean(dtype=np.float32))
    return centred / (std + np.float32(STD_EPS))
