"""The model families (docs/method.md §7): what each reads, its augmentation settings and its network, in one table.

Torch-free: the network is named, not imported, so that settings can be checked without torch; `backbone()` imports
it when a network is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from fsdlib.augment_settings import LogMelAugmentConfig, WaveAugmentConfig


@dataclass(frozen=True)
class Family:
    """One family: the feature store it reads (and crops), its `augment` settings, and its backbone's class."""

    kind: str  # logmel: crops and pads in frames, the log-mel input transform | wave: in samples, the raw waveform
    augment: type[LogMelAugmentConfig] | type[WaveAugmentConfig]
    network: str  # "module:class" of the backbone (its settings are a model's `arch`, less the heads' keys)

    def backbone(self) -> type:
        """The backbone's class (imports torch)."""
        module, name = self.network.split(":")
        return getattr(importlib.import_module(module), name)


FAMILIES = {
    "resnet": Family("logmel", LogMelAugmentConfig, "fsdlib.models.resnet:ResNet"),
    "envnet": Family("wave", WaveAugmentConfig, "fsdlib.models.envnet:EnvNetV2"),
}
