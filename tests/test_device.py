"""fsdlib/device.py's CUDA branches on a CPU-only machine: a stand-in CUDA runtime (bf16 or not) for the autocast
choice, and stand-ins for pin_memory() and Tensor.to that record how a batch travels to a (fake) GPU."""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import pytest
import torch

from fsdlib.device import autocast, autocast_dtype, to_device

CUDA = [torch.device("cuda"), torch.device("cuda", 0), torch.device("cuda", 1)]


@pytest.fixture(params=[True, False], ids=["bf16", "no_bf16"])
def bf16(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """A CUDA runtime with one GPU that does, or does not, support bf16 (nothing is ever allocated on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: request.param)
    return request.param


@pytest.mark.parametrize("device", CUDA, ids=str)
def test_autocast_is_bf16_on_a_cuda_device_with_bf16_and_off_without(bf16: bool, device: torch.device) -> None:
    assert autocast_dtype(device) is (torch.bfloat16 if bf16 else None)  # never float16 (it needs a loss scaler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that it disables CUDA autocast here: this machine has no CUDA
        context = autocast(device)
    if bf16:
        assert isinstance(context, torch.autocast)
        assert (context.device, context.fast_dtype) == ("cuda", torch.bfloat16)
    else:
        assert isinstance(context, nullcontext)


@pytest.mark.parametrize("device", [torch.device("cpu"), torch.device("meta")], ids=str)
def test_no_autocast_off_cuda_even_when_a_bf16_gpu_is_present(bf16: bool, device: torch.device) -> None:
    """CPU results stay float32 and reproducible, whatever GPU the machine also has."""
    assert autocast_dtype(device) is None
    assert isinstance(autocast(device), nullcontext)


class _FakeCopies:
    """Stand-ins for Tensor.pin_memory and Tensor.to: pinning returns a marked copy; a copy to a CUDA device is
    recorded and returns a meta tensor of the same shape (a tensor "on the GPU"); other copies run as usual."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple] = []
        self.pinned: list[torch.Tensor] = []
        self.sent: list[torch.Tensor] = []
        real_to = torch.Tensor.to

        def pin_memory(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            copy = tensor.clone()
            self.pinned.append(copy)
            self.calls.append(("pin_memory", tensor))
            return copy

        def to(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            target = kwargs.get("device", args[0] if args else None)
            if not (isinstance(target, torch.device | str) and torch.device(target).type == "cuda"):
                return real_to(tensor, *args, **kwargs)
            non_blocking = kwargs.get("non_blocking", args[2] if len(args) > 2 else False)
            self.calls.append(("to", tensor, torch.device(target), non_blocking))
            on_gpu = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
            self.sent.append(on_gpu)
            return on_gpu

        monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
        monkeypatch.setattr(torch.Tensor, "to", to)


@pytest.mark.parametrize("device", CUDA, ids=str)
def test_a_cpu_batch_goes_to_cuda_through_pinned_memory_without_blocking(monkeypatch: pytest.MonkeyPatch,
                                                                         device: torch.device) -> None:
    fake = _FakeCopies(monkeypatch)
    batch = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    out = to_device(batch, device)
    assert [call[0] for call in fake.calls] == ["pin_memory", "to"]
    (pinned,) = fake.pinned
    assert fake.calls[0][1] is batch  # the batch itself is pinned ...
    assert fake.calls[1][1] is pinned  # ... and it is the pinned copy that is sent
    assert fake.calls[1][2:] == (device, True)  # to the device named, asynchronously
    assert out is fake.sent[0]


def test_a_cpu_image_batch_is_pinned_sent_and_made_channels_last(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCopies(monkeypatch)
    batch = torch.zeros(2, 1, 8, 16)
    out = to_device(batch, torch.device("cuda"), channels_last=True)
    assert [call[0] for call in fake.calls] == ["pin_memory", "to"] and fake.calls[1][3] is True
    assert out.device.type == "meta" and out.shape == batch.shape
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", [torch.device("cpu"), torch.device("meta")], ids=str)
def test_no_pinning_unless_a_cpu_batch_goes_to_cuda(monkeypatch: pytest.MonkeyPatch, device: torch.device) -> None:
    """Only CPU memory bound for CUDA is pinned: a CPU batch staying on the CPU, or going elsewhere, is not."""
    fake = _FakeCopies(monkeypatch)
    batch = torch.ones(2, 3)
    out = to_device(batch, device)
    assert fake.calls == []
    assert out.device.type == device.type
    assert (out is batch) == (device.type == "cpu")
