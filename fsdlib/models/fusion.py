"""Inference copies of the networks: each batch norm folded into the convolution before it, channels-last memory.

In eval mode a batch norm is an affine map per channel, so it can be folded into the preceding convolution's
weights and bias: the same function up to float rounding, one pass over the activations fewer. Channels-last
memory lets oneDNN (CPU) and cuDNN (GPU) pick their fast convolution kernels. On the demo networks on a 2-core
CPU the two together make inference 2-3x faster (benchmarks/README.md).
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batch_norms(module: nn.Module) -> int:
    """Fold, in place, every batch norm that directly follows a convolution; returns how many were folded.

    Two layouts occur in our networks: `Sequential(conv, bn, ...)` (EnvNet layers, ResNet shortcuts) and
    attribute pairs `conv<k>` / `bn<k>` used in that order by forward (ResNet stem and blocks). The module must
    be in eval mode: folding uses the running statistics.
    """
    if module.training:
        raise ValueError("fold_batch_norms needs a module in eval mode")
    folded = 0
    for child in module.children():
        folded += fold_batch_norms(child)
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                module[i + 1] = nn.Identity()
                folded += 1
        return folded
    for name, child in list(module.named_children()):
        match = re.fullmatch(r"bn(\d+)", name)
        conv = getattr(module, f"conv{match.group(1)}", None) if match else None
        if isinstance(child, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d):
            setattr(module, f"conv{match.group(1)}", fuse_conv_bn_eval(conv, child))
            setattr(module, name, nn.Identity())
            folded += 1
    return folded


def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with batch norms folded and channels-last weights; `model` is untouched.

    A model that already is such a copy (`inference_ready`) is returned as it is, so callers that prepare their
    networks once (the tagger, the predict stage) are not copied and folded again on every call."""
    if is_inference_ready(model):
        return model
    net = copy.deepcopy(model).eval()
    fold_batch_norms(net)
    return mark_inference_ready(net)


def mark_inference_ready(net: nn.Module) -> nn.Module:
    """Freeze an eval-mode network whose batch norms are folded, in channels-last memory, and mark it ready."""
    for param in net.parameters():
        param.requires_grad_(False)
    net = net.to(memory_format=torch.channels_last)
    net.inference_ready = True
    return net


def is_inference_ready(net: nn.Module) -> bool:
    return bool(getattr(net, "inference_ready", False))
