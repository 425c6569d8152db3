"""Device choice and the GPU-only speedups (bf16 autocast, pinned copies), as no-ops on the CPU."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from fsdlib.errors import FsdError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else the CPU; an explicit device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise FsdError(f"unknown device {name!r} ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FsdError(f"device {name!r} requested but CUDA is not available (use --device auto or cpu)")
    return device


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 mixed precision on CUDA; full precision elsewhere (CPU results stay exactly reproducible)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def to_device(array: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Move a batch to the device: pinned, asynchronous copies on CUDA; channels-last 4-D images if asked."""
    if device.type == "cuda":
        array = array.pin_memory().to(device, non_blocking=True)
        if channels_last and array.dim() == 4:
            array = array.contiguous(memory_format=torch.channels_last)
        return array
    return array.to(device)
