"""Training losses (docs/method.md §5), all on raw logits: the authors' defects (double sigmoid, KL against
un-normalised multi-hot targets) are not reproduced by default; their loss scale and their double sigmoid are
options (docs/method.md §11, §15)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from fsdlib.models.heads import Activation

# "row_sum": KL summed over classes, averaged over rows. "authors": PyTorch's default 'mean' reduction
# (KLDivLoss()), averaged over batch x classes, i.e. 1/n_classes of "row_sum". BCE is the mean over
# batch x classes under both (BCEWithLogitsLoss's default).
Reduction = Literal["row_sum", "authors"]


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, mode: str = "bce") -> torch.Tensor:
    """Binary cross-entropy of sigmoid(logits) against (possibly soft) targets, mean over all entries; with mode
    "authors", of sigmoid(sigmoid(logits)), as the authors' code computed it (docs/method.md §15): a bounded loss,
    nearly flat where the model doubts a positive."""
    return F.binary_cross_entropy_with_logits(torch.sigmoid(logits) if mode == "authors" else logits, targets)


def kl_softmax_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: Reduction = "row_sum") -> torch.Tensor:
    """KL(q ‖ softmax(logits)) with q the target row normalised to sum 1; an all-zero target row contributes
    0 (and no NaN). "row_sum" sums over classes and averages over rows; "authors" averages over all entries."""
    total = targets.sum(dim=-1, keepdim=True)
    q = targets / total.clamp(min=torch.finfo(targets.dtype).tiny)
    log_p = F.log_softmax(logits, dim=-1)
    pointwise = torch.xlogy(q, q) - q * log_p
    return pointwise.sum(dim=-1).mean() if reduction == "row_sum" else pointwise.mean()


def head_loss(
    logits: torch.Tensor, targets: torch.Tensor, activation: Activation, reduction: Reduction = "row_sum",
    bce_mode: str = "bce",
) -> torch.Tensor:
    """The loss matching the output activation: BCE (`bce_mode`) for sigmoid models, KL for softmax models."""
    if activation == "sigmoid":
        return bce_loss(logits, targets, bce_mode)
    return kl_softmax_loss(logits, targets, reduction)


def spl_mse_loss(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error between sigmoid(logits) and soft pseudo labels (docs/method.md §6)."""
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
    reduction: Reduction = "row_sum",
    curated_bce: str = "bce",
    noisy_bce: str = "bce",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Curated loss + noisy_weight · noisy loss + spl_weight · SPL loss, each term only when given;
    `reduction` scales the curated and noisy KL terms (see `Reduction`); `curated_bce` and `noisy_bce` choose each
    sigmoid head's BCE ("bce" or "authors", `bce_loss`).

    Returns the total (for backward) and the unweighted components by name ("curated", "noisy",
    "spl") as detached 0-d tensors for logging (on the logits' device: reading them waits for the device).
    """
    curated = head_loss(curated_logits, curated_targets, activation, reduction, curated_bce)
    total = curated
    components = {"curated": curated.detach()}
    if noisy_logits is not None and noisy_targets is not None:
        noisy = head_loss(noisy_logits, noisy_targets, activation, reduction, noisy_bce)
        total = total + noisy_weight * noisy
        components["noisy"] = noisy.detach()
    if spl_logits is not None and spl_targets is not None:
        spl = spl_mse_loss(spl_logits, spl_targets)
        total = total + spl_weight * spl
        components["spl"] = spl.detach()
    return total, components
