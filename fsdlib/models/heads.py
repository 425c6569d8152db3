"""Multitask heads (docs/method.md §4): one head for curated labels, one for noisy labels, on a shared backbone."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Activation = Literal["sigmoid", "softmax"]


class ClassifierHead(nn.Sequential):
    """A Sequential whose last layer (the logits) runs in float32 even under mixed-precision autocast.

    bf16 logits keep 8 significant bits: sigmoid scores of large logits collapse into ties, which breaks the
    ranking lwlrap measures. Without autocast, on float32 inputs, this is exactly `nn.Sequential`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, last = self
        for layer in hidden:
            x = layer(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return last(x.float())


def classifier_head(
    in_features: int, n_classes: int, hidden: int = 1024, dropouts: tuple[float, float] = (0.2, 0.1)
) -> ClassifierHead:
    """Linear–ReLU–Dropout–Linear–ReLU–Dropout–Linear, returning float32 logits."""
    return ClassifierHead(
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropouts[0]),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropouts[1]),
        nn.Linear(hidden, n_classes),
    )


class MultitaskHeads(nn.Module):
    """Two heads of identical shape, `curated` and `noisy`; without multitask there is no noisy head."""

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        hidden: int = 1024,
        dropouts: tuple[float, float] = (0.2, 0.1),
        multitask: bool = True,
    ) -> None:
        super().__init__()
        self.curated = classifier_head(in_features, n_classes, hidden, dropouts)
        self.noisy = classifier_head(in_features, n_classes, hidden, dropouts) if multitask else None

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        noisy = None if self.noisy is None else self.noisy(features)
        return self.curated(features), noisy


class TaggingModel(nn.Module):
    """A backbone (features of size `out_features`) followed by multitask heads."""

    def __init__(self, backbone: nn.Module, heads: MultitaskHeads) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits of the curated and the noisy head (None without multitask)."""
        return self.heads(self.backbone(x))

    def for_inference(self) -> TaggingModel:
        """An eval-mode copy for prediction: batch norms folded into their convolutions, channels-last memory (this
        model itself when it already is such a copy)."""
        from fsdlib.models.fusion import inference_copy

        return inference_copy(self)

    def predict(self, x: torch.Tensor, activation: Activation = "sigmoid", lengths: torch.Tensor | None = None,
                ) -> torch.Tensor:
        """Class probabilities from the curated head: predictions never come from the noisy head.

        With `lengths` (B,), each sample's time steps from lengths[b] on are batch padding: the backbone ignores
        them, so a clip scores as it does alone. Runs without gradients in the current mode; call `eval()` first.
        """
        with torch.no_grad():
            features = self.backbone(x) if lengths is None else self.backbone(x, lengths)
            logits = self.heads.curated(features)
        return torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=-1)
