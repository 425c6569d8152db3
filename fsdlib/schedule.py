"""Optimisers and the cyclic cosine learning rate of Snapshot Ensembles (docs/method.md §5), stepped per iteration."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

from fsdlib.errors import FsdError


def cyclic_cosine_lr(step: int, iters_per_cycle: int, lr_max: float, lr_min: float) -> float:
    """Learning rate at 0-based iteration `step`: cosine from lr_max down towards lr_min within each
    cycle of `iters_per_cycle` iterations, restarting at lr_max every cycle."""
    t = step % iters_per_cycle
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * t / iters_per_cycle))


def cyclic_cosine_scheduler(
    optimizer: torch.optim.Optimizer, iters_per_cycle: int, lr_max: float, lr_min: float
) -> LambdaLR:
    """A LambdaLR giving `cyclic_cosine_lr`; call `step()` after every optimiser step.

    Sets every parameter group's lr to lr_max first (LambdaLR scales the initial lr). To resume, build
    the scheduler first, then load the optimizer's state and then the scheduler's.
    """
    if iters_per_cycle < 1 or lr_max <= 0:
        raise FsdError(f"need iters_per_cycle >= 1 and lr_max > 0, got {iters_per_cycle} and {lr_max}")
    for group in optimizer.param_groups:
        group["lr"] = lr_max
        group["initial_lr"] = lr_max
    return LambdaLR(optimizer, lambda step: cyclic_cosine_lr(step, iters_per_cycle, lr_max, lr_min) / lr_max)


def build_optimizer(
    name: Literal["adam", "sgd"],
    params: Iterable[torch.nn.Parameter],
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """Adam (ResNet) or SGD with momentum (EnvNet), as in the paper's table; `nesterov` makes the SGD
    momentum Nesterov's, as the authors' code trains EnvNet (docs/method.md §11). Adam ignores it.

    On CUDA the update of every parameter runs as one fused kernel (`fused_update`) instead of a few launches per
    parameter tensor; on the CPU the default (foreach) update keeps results as they were."""
    params = list(params)
    fused = fused_update(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                           fused=fused)


def fused_update(params: list[torch.nn.Parameter]) -> bool | None:
    """True when every parameter lives on a CUDA device (fused optimiser kernels), else None (torch's default)."""
    return True if params and all(p.device.type == "cuda" for p in params) else None
