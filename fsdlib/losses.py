"""Training losses (SPEC §5), all on raw logits: the authors' defects (double sigmoid, KL against
un-normalised multi-hot targets) are not reproduced."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsdlib.errors import FsdError
from fsdlib.models.heads import Activation


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of sigmoid(logits) against (possibly soft) targets, mean over all entries."""
    return F.binary_cross_entropy_with_logits(logits, targets)


def kl_softmax_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ softmax(logits)) with q the target row normalised to sum 1, summed over classes and
    averaged over rows; an all-zero target row contributes 0 (and no NaN)."""
    total = targets.sum(dim=-1, keepdim=True)
    q = targets / total.clamp(min=torch.finfo(targets.dtype).tiny)
    log_p = F.log_softmax(logits, dim=-1)
    return (torch.xlogy(q, q) - q * log_p).sum(dim=-1).mean()


def head_loss(logits: torch.Tensor, targets: torch.Tensor, activation: Activation) -> torch.Tensor:
    """The loss matching the output activation: BCE for sigmoid models, KL for softmax models."""
    if activation == "sigmoid":
        return bce_loss(logits, targets)
    if activation == "softmax":
        return kl_softmax_loss(logits, targets)
    raise FsdError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")


def spl_mse_loss(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error between sigmoid(logits) and soft pseudo labels (SPEC §6)."""
    return F.mse_loss(torch.sigmoid(logits), soft_targets)


def multitask_loss(
    curated_logits: torch.Tensor,
    curated_targets: torch.Tensor,
    noisy_logits: torch.Tensor | None,
    noisy_targets: torch.Tensor | None,
    activation: Activation,
    noisy_weight: float = 1.0,
    spl_logits: torch.Tensor | None = None,
    spl_targets: torch.Tensor | None = None,
    spl_weight: float = 20.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Curated loss + noisy_weight · noisy loss + spl_weight · SPL loss, each term only when given.

    Returns the total (for backward) and the unweighted components by name ("curated", "noisy",
    "spl") as floats for logging.
    """
    curated = head_loss(curated_logits, curated_targets, activation)
    total = curated
    components = {"curated": curated.item()}
    if noisy_logits is not None and noisy_targets is not None:
        noisy = head_loss(noisy_logits, noisy_targets, activation)
        total = total + noisy_weight * noisy
        components["noisy"] = noisy.item()
    if spl_logits is not None and spl_targets is not None:
        spl = spl_mse_loss(spl_logits, spl_targets)
        total = total + spl_weight * spl
        components["spl"] = spl.item()
    return total, components
