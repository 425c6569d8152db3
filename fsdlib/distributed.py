"""Data-parallel training of one (model, fold) under torchrun: process group, synchronised batch norm, shards.

Every rank draws the same global batch (same seeds) and trains on its slice; gradients are averaged by
DistributedDataParallel and batch-norm statistics are computed over the global batch, so the result equals
a single process with the same global batch up to floating-point reduction order (dropout masks are drawn
per rank, so with dropout the runs are equivalent in distribution rather than bit for bit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from fsdlib.errors import FsdError


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel workers (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

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
        if self.size > 1:
            dist.barrier()


def init_world(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment; a lone process gets World()."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch norm over the samples of all ranks: statistics and their gradients all-reduced (any device)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[override]
        dims = [d for d in range(x.dim()) if d != 1]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
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
        return xhat * weight.view(shape) + bias.view(shape), mean, var, total

    @staticmethod
    def backward(ctx, grad_out, _mean, _var, _total):  # type: ignore[override]
        xhat, weight, invstd, total = ctx.saved_tensors
        dims = [d for d in range(grad_out.dim()) if d != 1]
        channels = grad_out.shape[1]
        shape = [1, channels] + [1] * (grad_out.dim() - 2)
        local = torch.cat([grad_out.sum(dims), (grad_out * xhat).sum(dims)])
        grad_bias, grad_weight = local[:channels].clone(), local[channels:].clone()  # DDP averages these
        dist.all_reduce(local)
        mean_dy, mean_dy_xhat = local[:channels] / total, local[channels:] / total
        grad_x = (grad_out - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape)) * (invstd * weight).view(shape)
        return grad_x, grad_weight, grad_bias, None


class SyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span all ranks; behaves as BatchNorm2d in eval or alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
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
