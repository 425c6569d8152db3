"""Data-parallel training of one (model, fold) under torchrun: process group, synchronised batch norm, shards.

Every rank draws the same global batch (same seeds) and trains on its slice; gradients are averaged by
DistributedDataParallel and batch-norm statistics are computed over the global batch, so the result equals
a single process with the same global batch up to floating-point reduction order (dropout masks are drawn
per rank, so with dropout the runs are equivalent in distribution rather than bit for bit).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fsdlib.errors import FsdError


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel workers (rank 0 of 1 without torchrun), the device it trains
    and runs its collectives on (the rank's GPU under NCCL, the CPU under gloo), and whether it is a member of a
    process group (then DistributedDataParallel, synchronised batch norm and collectives run, even for one rank)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    joined: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of a global batch of n samples (n must divide evenly)."""
        if n % self.size:
            raise FsdError(f"batch of {n} does not split evenly over {self.size} processes")
        part = n // self.size
        return slice(self.rank * part, (self.rank + 1) * part)

    def barrier(self) -> None:
        if self.joined:
            dist.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of `values` over all ranks, reduced on the group's device (NCCL has no CPU backend)."""
        if not self.joined:
            return values
        values = values.to(self.device)
        dist.all_reduce(values)
        return values / self.size

    def from_main(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (pickled; tensors in it should be on the CPU)."""
        if not self.joined:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]


def rank_device(device: torch.device, local_rank: int, visible: int) -> torch.device:
    """The GPU of the process with `local_rank` on its node: cuda:LOCAL_RANK when the process sees every GPU of the
    node, cuda:0 when it sees exactly one (a launcher that binds one GPU per task); anything else is ambiguous."""
    if local_rank < visible:
        return torch.device("cuda", local_rank)
    if visible == 1:
        return torch.device("cuda", 0)
    raise FsdError(f"local rank {local_rank} but this process sees {visible} GPUs: show each process all of its "
                   "node's GPUs, or exactly one")


def launched_as_group() -> bool:
    """Whether a launcher (torchrun) started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment, or take part in the one the caller already
    joined (of any size); a lone process gets World() on `device`.

    On CUDA each rank binds its own GPU (`torch.cuda.set_device`, and `device_id` so NCCL connects eagerly)."""
    if not launched_as_group() and not dist.is_initialized():
        return World(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = rank_device(device, local_rank, torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        atexit.register(leave_group)  # the group this process joined is left before the interpreter is torn down
    return World(dist.get_rank(), dist.get_world_size(), local_rank, device, joined=True)


def leave_group() -> None:
    """Destroy the process group while the interpreter is whole. A rank that exits with it alive leaves gloo's worker
    threads to the interpreter's teardown, where they abort now and then ("terminate called without an active
    exception"); NCCL warns that pending work may not have finished."""
    if dist.is_initialized():
        dist.destroy_process_group()


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch norm over the samples of all ranks: statistics and their gradients all-reduced (any device).

    Statistics, counts and gradients are computed in float32 whatever the input's precision (a bf16 count of
    elements would be rounded); the output and the input's gradient come back in the input's dtype.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[override]
        dims = [d for d in range(x.dim()) if d != 1]
        dtype, x = x.dtype, x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        dist.all_reduce(stats)
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels : 2 * channels] / total - mean * mean).clamp(min=0)
        invstd = torch.rsqrt(var + eps)
        shape = [1, channels] + [1] * (x.dim() - 2)
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(xhat, weight, invstd, total)
        ctx.mark_non_differentiable(mean, var, total)
        return (xhat * weight.view(shape) + bias.view(shape)).to(dtype), mean, var, total

    @staticmethod
    def backward(ctx, grad_out, _mean, _var, _total):  # type: ignore[override]
        xhat, weight, invstd, total = ctx.saved_tensors
        dtype, grad_out = grad_out.dtype, grad_out.float()
        dims = [d for d in range(grad_out.dim()) if d != 1]
        channels = grad_out.shape[1]
        shape = [1, channels] + [1] * (grad_out.dim() - 2)
        local = torch.cat([grad_out.sum(dims), (grad_out * xhat).sum(dims)])
        grad_bias, grad_weight = local[:channels].clone(), local[channels:].clone()  # DDP averages these
        dist.all_reduce(local)
        mean_dy, mean_dy_xhat = local[:channels] / total, local[channels:] / total
        grad_x = (grad_out - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape)) * (invstd * weight).view(shape)
        return grad_x.to(dtype), grad_weight, grad_bias, None


class SyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span all ranks; behaves as BatchNorm2d in eval or alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        y, mean, var, total = _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            momentum = self.momentum if self.momentum is not None else 0.1
            unbiased = var * total / (total - 1).clamp(min=1)
            self.running_mean.mul_(1 - momentum).add_(momentum * mean)
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
            self.num_batches_tracked += 1
        return y


def sync_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by SyncBatchNorm (same parameters and buffers, so snapshots are unchanged)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SyncBatchNorm):
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync.to(child.weight.device))
        else:
            sync_batch_norm(child)
    return module
