"""Device choice and the accelerator-only speedups (bf16 autocast, pinned copies, cuDNN autotuning), as no-ops on
the CPU.

Every branch is keyed on where a tensor is, not on which device was named, so a tensor already on the device is
never copied or pinned again, and meta or fake tensors exercise the same branches without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

from fsdlib.errors import FsdError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else the CPU; an explicit device must exist (`cuda:N` below the count)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise FsdError(f"unknown device {name!r} ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FsdError(f"device {name!r} requested but CUDA is not available (use --device auto or cpu)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise FsdError(f"device {name!r} requested but this process sees {count} CUDA device(s) "
                           f"(cuda:0 to cuda:{count - 1}; check CUDA_VISIBLE_DEVICES)")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA devices that support it; None (full precision) elsewhere, so CPU results stay reproducible
    and older GPUs (no bf16) train in float32 rather than in float16 without a loss scaler."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device) -> AbstractContextManager:
    """Mixed precision where `autocast_dtype` allows it, else a no-op."""
    dtype = autocast_dtype(device)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def is_on(array: torch.Tensor, device: torch.device) -> bool:
    """Whether `array` already lives on `device` (a device named without index matches any of its type)."""
    return array.device.type == device.type and device.index in (None, array.device.index)


def to_device(array: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Move a batch to the device: CPU tensors bound for CUDA through pinned memory, asynchronously; a tensor
    already there is left in place (never pinned: only CPU memory can be). Off the CPU, 4-D images are made
    channels-last if asked."""
    if not is_on(array, device):
        if array.device.type == "cpu" and device.type == "cuda":
            array = array.pin_memory().to(device, non_blocking=True)
        else:
            array = array.to(device)
    if channels_last and device.type != "cpu" and array.dim() == 4:
        array = array.contiguous(memory_format=torch.channels_last)
    return array


@contextmanager
def cudnn_autotune(device: torch.device, fixed_shapes: bool) -> Iterator[None]:
    """cuDNN times the convolution algorithms once per new shape and keeps the fastest: worth it when every
    training batch has the same shape (a fixed crop), wasted when shapes vary (several crop lengths, full-length
    inference). Only on CUDA, and only inside the block."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = fixed_shapes
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
