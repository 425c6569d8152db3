"""The settings of one model of the ensemble (docs/method.md §7), shared by training and inference, and of the
distilled network (`distill`, docs/method.md §13).

Torch-free: a spec is checked when built (every choice of a `models.<name>` section, here and only here), and the
code that trains or predicts with it trusts it; fsdlib.models.build_network makes its network.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsdlib.errors import FsdError, check_choice
from fsdlib.families import FAMILIES
from fsdlib.settings import build

if TYPE_CHECKING:
    from fsdlib.augment_settings import LogMelAugmentConfig, WaveAugmentConfig

ACTIVATIONS = ("sigmoid", "softmax")
OPTIMIZERS = ("adam", "sgd")
PAD_MODES = ("zero", "loop")  # silence, or copies of the clip
LOSS_REDUCTIONS = ("authors", "row_sum")  # KL over batch x classes (PyTorch's default) | summed per row
BCE_MODES = ("bce", "authors")  # a sigmoid head's BCE: correct | on sigmoid(logits), the authors' double sigmoid
VALIDATE_EVERY = ("cycle", "epoch")  # validation lwlrap after each cycle | after each epoch (the paper's Table 1 CV)
SPL_VARIANTS = ("all_folds", "leak_free")
CURATED_TARGETS = ("labels", "ensemble")  # what the distilled network learns on curated clips (docs/method.md §13)
DISTILL_SUBSETS = ("curated", "noisy", "test")  # the distilled network learns from curated clips and any others


@dataclass(frozen=True)
class ModelSpec:
    """One model of the ensemble, as written under `models.<name>` in params.yaml; checked when built."""

    family: str  # resnet (log-mel) | envnet (waveform)
    activation: str = "sigmoid"  # sigmoid | softmax
    crop: int = 512  # frames (resnet) or samples (envnet)
    crops: tuple[int, ...] | None = None  # varying crop lengths: each step draws one (instead of `crop`)
    batch: int = 64
    cycles: int = 8
    epochs_per_cycle: int = 64
    lr_max: float = 1e-3
    lr_min: float = 1e-6
    optimizer: str = "adam"  # adam | sgd (momentum 0.9)
    momentum: float = 0.9
    nesterov: bool = True  # SGD's momentum is Nesterov's (docs/method.md §11); Adam ignores it
    weight_decay: float = 0.0
    multitask: bool = True
    noisy_weight: float = 1.0
    # The authors' training dynamics (docs/method.md §11) are the defaults; params.yaml may choose otherwise.
    loss_reduction: str = "authors"  # authors (KL averaged over batch x classes) | row_sum (KL summed per row)
    separate_passes: bool = True  # curated, noisy and SPL parts each through the network alone (per-part BN statistics)
    # The authors' double sigmoid (docs/method.md §15): their A, B, C and D on the noisy head, D on the curated head too.
    noisy_loss: str = "bce"  # bce | authors (sigmoid models only)
    curated_loss: str = "bce"  # bce | authors (sigmoid models only)
    init_from: str | None = None  # another model's name: start from its same-fold final snapshot
    pad_mode: str = "zero"  # zero | loop, for short training crops and TTA pads
    seed: int = 0
    arch: dict[str, Any] = field(default_factory=dict)
    # LogMelAugmentConfig or WaveAugmentConfig keys. The latter's defaults (order crop_first, mixup_mode linear,
    # p 0.5) are not the authors'; params/paper.yaml sets theirs (authors, bc, 1.0) in each EnvNet, docs/method.md §11.
    augment: dict[str, Any] = field(default_factory=dict)
    spl: dict[str, Any] = field(default_factory=dict)  # soft pseudo labels: {variant, weight}; empty = off
    snapshot_cycles: tuple[int, ...] | None = None  # cycles used at prediction time (1-based); None = all
    # "epoch" also validates after every epoch and keeps each fold's best epoch's OOF predictions: the paper's reading
    # of Table 1 (docs/method.md §15). It costs one pass over the fold's validation clips per epoch.
    validate_every: str = "cycle"
    tta_pads: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        """Check every setting before any work; FsdError names the bad value."""
        check_choice("family", self.family, tuple(FAMILIES))
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("pad_mode", self.pad_mode, PAD_MODES)
        check_choice("loss_reduction", self.loss_reduction, LOSS_REDUCTIONS)
        check_choice("noisy_loss", self.noisy_loss, BCE_MODES)
        check_choice("curated_loss", self.curated_loss, BCE_MODES)
        check_choice("validate_every", self.validate_every, VALIDATE_EVERY)
        checks = [
            (isinstance(self.separate_passes, bool) and isinstance(self.nesterov, bool),
             f"separate_passes and nesterov must be true or false, got {self.separate_passes!r}, {self.nesterov!r}"),
            (not (self.optimizer == "sgd" and self.nesterov) or self.momentum > 0,
             f"nesterov needs momentum > 0, got {self.momentum}"),
            (self.crop > 0 and self.batch > 0, "crop and batch must be positive"),
            (not self.crops or min(self.crops) > 0, f"crops must be positive lengths, got {self.crops}"),
            (all(p >= 0 for p in self.tta_pads), f"tta_pads must be >= 0, got {self.tta_pads}"),
            (self.cycles > 0 and self.epochs_per_cycle > 0, "cycles and epochs_per_cycle must be positive"),
            (0 < self.lr_min <= self.lr_max, f"need 0 < lr_min <= lr_max, got {self.lr_min}, {self.lr_max}"),
            (not self.spl or self.spl.get("variant") in SPL_VARIANTS,
             f"spl.variant must be {' or '.join(SPL_VARIANTS)}, got {self.spl.get('variant')!r}"),
            (not self.spl or self.activation == "sigmoid", "soft pseudo labels train a sigmoid curated head"),
            (self.activation == "sigmoid" or self.noisy_loss == self.curated_loss == "bce",
             "noisy_loss and curated_loss choose a sigmoid head's BCE: a softmax model takes bce (KL is its loss)"),
            (not self.snapshot_cycles or all(0 < c <= self.cycles for c in self.snapshot_cycles),
             f"snapshot_cycles must lie in 1..{self.cycles}, got {self.snapshot_cycles}"),
        ]
        for ok, problem in checks:
            if not ok:
                raise FsdError(problem)
        self.augment_config()

    def seed_for(self, *parts: Any) -> int:
        """A stable 63-bit seed from the spec's seed and `parts` (so each cycle's randomness is independent of resume)."""
        digest = hashlib.sha256(json.dumps([self.seed, *parts], default=str).encode()).digest()
        return int.from_bytes(digest[:8], "little") >> 1

    @property
    def kind(self) -> str:
        """The feature store kind the family reads."""
        return FAMILIES[self.family].kind

    @property
    def pads(self) -> tuple[int, ...]:
        """The TTA pads predicted with: `tta_pads`, or pad 0 alone when it is empty (no TTA)."""
        return tuple(self.tta_pads) or (0,)

    @property
    def spl_variant(self) -> str | None:
        return self.spl.get("variant") if self.spl else None

    @property
    def spl_weight(self) -> float:
        return float(self.spl.get("weight", 20.0))

    def augment_config(self) -> LogMelAugmentConfig | WaveAugmentConfig:
        """The family's augmentation settings from `augment`."""
        return build(FAMILIES[self.family].augment, self.augment, "augment", None)


def model_spec(values: dict[str, Any], name: str, path: Path | None = None) -> ModelSpec:
    """The spec of model `name` from its settings (a `models.<name>` section, or a tagger file's copy of one)."""
    return build(ModelSpec, values, f"models.{name}", path)


@dataclass(frozen=True)
class DistillSettings:
    """`distill`: one fast network trained on the submitted ensemble's predictions (docs/method.md §13)."""

    model: ModelSpec = field(metadata={"section": ModelSpec})
    subsets: tuple[str, ...] = ("curated", "noisy", "test")
    curated_targets: str = "labels"
    holdout_fold: int = 0

    def __post_init__(self) -> None:
        check_choice("curated_targets", self.curated_targets, CURATED_TARGETS)
        if not set(self.subsets) <= set(DISTILL_SUBSETS) or "curated" not in self.subsets:
            raise FsdError(f"subsets must be curated and any of {list(DISTILL_SUBSETS[1:])}, got {list(self.subsets)}")
        if self.model.multitask or self.model.spl or self.model.init_from:
            raise FsdError("model: the distilled network learns from the ensemble's predictions only "
                           "(multitask, spl and init_from must be off)")
