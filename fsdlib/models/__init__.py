"""Networks: ResNet (log-mel) and EnvNet-v2 (waveform) backbones under multitask heads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch

from fsdlib.errors import FsdError
from fsdlib.families import FAMILIES
from fsdlib.models.envnet import EnvNetV2
from fsdlib.models.heads import Activation, MultitaskHeads, TaggingModel
from fsdlib.models.resnet import ResNet, resnet34

if TYPE_CHECKING:
    from fsdlib.spec import ModelSpec

__all__ = ["Activation", "EnvNetV2", "MultitaskHeads", "ResNet", "TaggingModel", "build_model", "build_network",
           "resnet34"]

HEAD_KWARGS = ("hidden", "dropouts")


def build_model(family: Literal["resnet", "envnet"], n_classes: int, multitask: bool, **arch: Any) -> TaggingModel:
    """Backbone of `family` (a checked ModelSpec's) plus heads; `arch` holds backbone settings and the heads'
    `hidden`, `dropouts`.

    resnet takes `layers`, `widths`, `in_channels`; envnet takes `width` (channel multiplier).
    """
    head_kwargs = {key: arch.pop(key) for key in HEAD_KWARGS if key in arch}
    if "widths" in arch:
        arch["widths"] = tuple(arch["widths"])
    if "layers" in arch:
        arch["layers"] = tuple(arch["layers"])
    if "dropouts" in head_kwargs:
        head_kwargs["dropouts"] = tuple(head_kwargs["dropouts"])
    try:
        backbone = FAMILIES[family].backbone()(**arch)
    except TypeError as error:
        raise FsdError(f"bad {family} settings {sorted(arch)}: {error}") from error
    heads = MultitaskHeads(backbone.out_features, n_classes, multitask=multitask, **head_kwargs)
    return TaggingModel(backbone, heads)


def build_network(spec: ModelSpec, n_classes: int) -> TaggingModel:
    """A model's network, in channels-last memory: the layout oneDNN and cuDNN run fastest."""
    model = build_model(spec.family, n_classes, spec.multitask, **dict(spec.arch))
    return model.to(memory_format=torch.channels_last)
