"""EnvNet-v2 on raw waveforms (docs/method.md §4): 1-D filter banks, a channel/height swap, then 2-D convolutions.

No layer is padded, so in a batch padded to its longest clip each clip's own output columns see only its own
samples; given the valid lengths, the final max pool looks at those columns only (docs/method.md §8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsdlib.errors import FsdError
from fsdlib.models.resnet import masked, time_mask

# Output channels of conv1..conv10 in the paper.
PAPER_CHANNELS = (32, 64, 32, 32, 64, 64, 128, 128, 256, 256)
# conv2's filters become the height of the map after the swap. The 8×8, 8×8 and 5×3 layers need a
# height of at least 20, and 64 gives the paper's 10 output rows, so this count is never scaled.
SWAP_HEIGHT = 64
POOLED_HEIGHT = 10


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride: tuple[int, int] = (1, 1)
) -> nn.Sequential:
    """Unpadded convolution without bias, then batch norm and ReLU: every EnvNet-v2 layer."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def output_width(time_steps: list[tuple[int, int]], width: torch.Tensor) -> torch.Tensor:
    """Columns left of inputs `width` wide after unpadded layers of (kernel, stride) over time, in order (floor, as
    torch rounds)."""
    for kernel, stride in time_steps:
        width = (width - kernel) // stride + 1
    return width


def centre_short(wave: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
    """A batch where each clip shorter than `width` sits centred in `width` zeros, as it would be alone."""
    out = torch.zeros(wave.shape[0], max(width, wave.shape[-1]), dtype=wave.dtype, device=wave.device)
    for row, length in enumerate(lengths.tolist()):
        start = max(width - length, 0) // 2
        out[row, start : start + length] = wave[row, :length]
    return out


def minimum_input_width(layers: list[nn.Module]) -> int:
    """Shortest input width that leaves at least one column after every unpadded conv / pool in order."""
    width = 1
    for layer in reversed(layers):
        width = (width - 1) * layer.stride[1] + layer.kernel_size[1]
    return width


class EnvNetV2(nn.Module):
    """EnvNet-v2 backbone: (B, samples) float waveform in [-1, 1) → (B, 10 × conv10 channels).

    `width` scales every layer's channels except conv2's, which is the height after the swap
    (SWAP_HEIGHT), so a narrow net keeps the paper's geometry and `min_samples`. Inputs shorter
    than `min_samples` are zero-padded on both sides (centred) inside forward.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        if width <= 0:
            raise FsdError(f"EnvNet width multiplier must be positive, got {width}")
        c = [max(1, round(channels * width)) for channels in PAPER_CHANNELS]
        c[1] = SWAP_HEIGHT

        # 1-D part over time: filter banks on the raw waveform (shape B × 1 × 1 × samples).
        self.conv1 = conv_bn_relu(1, c[0], (1, 64), stride=(1, 2))
        self.conv2 = conv_bn_relu(c[0], c[1], (1, 16), stride=(1, 2))
        self.pool2 = nn.MaxPool2d((1, 64))

        # 2-D part: after the swap the map is 1 channel × 64 rows × time.
        self.conv3 = conv_bn_relu(1, c[2], (8, 8))
        self.conv4 = conv_bn_relu(c[2], c[3], (8, 8))
        self.pool4 = nn.MaxPool2d((5, 3))

        self.conv5 = conv_bn_relu(c[3], c[4], (1, 4))
        self.conv6 = conv_bn_relu(c[4], c[5], (1, 4))
        self.pool6 = nn.MaxPool2d((1, 2))

        self.conv7 = conv_bn_relu(c[5], c[6], (1, 2))
        self.conv8 = conv_bn_relu(c[6], c[7], (1, 2))
        self.pool8 = nn.MaxPool2d((1, 2))

        self.conv9 = conv_bn_relu(c[7], c[8], (1, 2))
        self.conv10 = conv_bn_relu(c[8], c[9], (1, 2))
        self.global_pool = nn.AdaptiveMaxPool2d((POOLED_HEIGHT, 1))

        self.out_features = POOLED_HEIGHT * c[9]
        # Modules are registered in forward order, so the time axis can be walked layer by layer.
        time_layers = [m for m in self.modules() if isinstance(m, nn.Conv2d | nn.MaxPool2d)]
        self.min_samples = minimum_input_width(time_layers)
        self.time_steps = [(m.kernel_size[1], m.stride[1]) for m in time_layers]

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Features of the waveforms; with `lengths` (B,), each clip's samples from lengths[b] on are padding."""
        if lengths is not None and bool((lengths >= wave.shape[-1]).all()):
            lengths = None  # nothing is padded: the plain forward
        if lengths is not None:
            lengths = lengths.to(wave.device)
            if bool((lengths < self.min_samples).any()):
                wave = centre_short(wave, lengths, self.min_samples)
                lengths = lengths.clamp(min=self.min_samples)
        short = self.min_samples - wave.shape[-1]
        if short > 0:
            wave = F.pad(wave, (short // 2, short - short // 2))
        x = wave[:, None, None, :]

        x = self.conv1(x)
        x = self.conv2(x)
        x = self.pool2(x)

        x = x.transpose(1, 2)

        x = self.conv3(x)
        x = self.conv4(x)
        x = self.pool4(x)

        x = self.conv5(x)
        x = self.conv6(x)
        x = self.pool6(x)

        x = self.conv7(x)
        x = self.conv8(x)
        x = self.pool8(x)

        x = self.conv9(x)
        x = self.conv10(x)
        if lengths is not None:  # after the ReLU every value is ≥ 0: zeroed columns never win the max
            columns = output_width(self.time_steps, lengths)
            x = masked(x, time_mask(columns, x.shape[-1]))
        x = self.global_pool(x)
        return torch.flatten(x, 1)
