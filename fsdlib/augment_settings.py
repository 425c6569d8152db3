"""The `augment` settings of a model (docs/method.md §3, §11), torch-free so that a ModelSpec checks them when built;
fsdlib/augment.py applies them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fsdlib.errors import check_choice

WaveOrder = Literal["crop_first", "authors"]
MixupMode = Literal["linear", "bc", "authors"]
WAVE_ORDERS = ("crop_first", "authors")
MIXUP_MODES = ("linear", "bc", "authors")
ADDITIONAL_CROP_MODES = ("time", "authors")  # docs/method.md §15
FREQ_MASK_MODES = ("paper", "authors")

@dataclass(frozen=True)
class LogMelAugmentConfig:
    """Switches and ranges of the log-mel augmentations (applied: additional crop, mixup, gain, mask).

    `additional_crop_mode` "time" keeps a random time window of the content (the paper); "authors" does that only for
    clips shorter than the crop and zeroes mel bins outside a random band for the others, as the authors' code did.
    `freq_mask_mode` "paper" zeroes U{freq_mask_range} consecutive bins; "authors" zeroes ±w bins around a random bin,
    w from freq_mask_range (upper end excluded), clipped at the edges (docs/method.md §15).
    """

    mixup: bool = True
    gain: bool = True
    freq_mask: bool = True
    additional_crop: bool = False
    p: float = 0.5
    gain_range: tuple[float, float] = (0.8, 1.2)
    freq_mask_range: tuple[int, int] = (8, 32)
    additional_crop_range: tuple[float, float] = (0.25, 1.0)
    mixup_alpha: float = 1.0
    additional_crop_mode: str = "time"
    freq_mask_mode: str = "paper"

    def __post_init__(self) -> None:
        check_choice("additional_crop_mode", self.additional_crop_mode, ADDITIONAL_CROP_MODES)
        check_choice("freq_mask_mode", self.freq_mask_mode, FREQ_MASK_MODES)


@dataclass(frozen=True)
class WaveAugmentConfig:
    """Switches and ranges of the waveform augmentations (mixup, time scale, gain).

    The time-scale factor is log-uniform in scale_range (1.25^U(-1,1)); the gain is U(-gain_db, gain_db) dB.
    `order` "crop_first": the loader crops (`fsdlib.batches.crop_wave`), then the batch gets mixup, time scaling of
    the crop (linear resampling) and gain. "authors" (docs/method.md §11): the whole clip is scaled (nearest-neighbour)
    before padding and cropping (the loader draws and copies the source samples, `fsdlib.batches.scaled_crop_windows`;
    the batch's device gathers the crops, `gather_scaled_crop`), then mixup and gain.
    `mixup_mode` "linear": λ·x1 + (1-λ)·x2; "bc": BC-learning mixing, corrected for the clips' gains (`bc_mixup`);
    "authors": the authors' code, which BC-mixed each clip with itself: labels mixed, audio only scaled (`self_mixup`).
    The authors apply every waveform augmentation to every sample: p = 1. These defaults (crop_first, linear,
    p 0.5) are fsdlib's; params/paper.yaml sets the authors' (authors, bc, 1.0) in each EnvNet's `augment`.
    """

    mixup: bool = True
    time_scale: bool = True
    gain: bool = True
    p: float = 0.5
    scale_range: tuple[float, float] = (0.8, 1.25)
    gain_db: float = 6.0
    mixup_alpha: float = 1.0
    order: WaveOrder = "crop_first"
    mixup_mode: MixupMode = "linear"

    def __post_init__(self) -> None:
        check_choice("order", self.order, WAVE_ORDERS)
        check_choice("mixup_mode", self.mixup_mode, MIXUP_MODES)

    @property
    def scales_on_loader(self) -> bool:
        """True when the loader must crop with `fsdlib.batches.scaled_crop_windows` (time scaling of the whole clip)."""
        return self.time_scale and self.order == "authors"
