"""ResNet on log-mel spectrograms (docs/method.md §4): torchvision's layout, one input channel, global max pooling.

Given each clip's valid length, a padded batch gives every clip the output it gets alone (docs/method.md §8): the
frames past a clip's end are zeroed after every layer, exactly what a convolution's own zero padding sees alone.
"""

from __future__ import annotations

import torch
from torch import nn

from fsdlib.errors import FsdError


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution with padding 1 and no bias (batch norm follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1×1 convolution without bias: the projection of a downsampling shortcut."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 conv–BN layers plus a shortcut; the shortcut is a 1×1 conv–BN when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`lengths` (B,), when given, are each clip's valid output steps: the steps after them are zeroed after each
        ReLU."""
        identity = x if self.downsample is None else self.downsample(x)

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        valid = time_mask(lengths, out.shape[-1])
        out = masked(out, valid)

        out = self.conv2(out)
        out = self.bn2(out)

        out = out + identity
        return masked(self.relu(out), valid)


def masked(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """x with the time steps outside `valid` (broadcast over x) set to zero; x itself without a mask."""
    return x if valid is None else x * valid.to(x.dtype)  # in x's dtype: under bf16 autocast x stays bf16


def time_mask(lengths: torch.Tensor | None, steps: int) -> torch.Tensor | None:
    """(B, 1, 1, steps) float mask of the first lengths[b] time steps of each sample; None without lengths."""
    if lengths is None:
        return None
    return (torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]).float()[:, None, None, :]


def halved(lengths: torch.Tensor | None) -> torch.Tensor | None:
    """Valid lengths after a stride-2 layer padded as ours are (kernel 2p + 1, padding p, or 1×1): ceil(L / 2)."""
    return None if lengths is None else (lengths + 1) // 2


class ResNet(nn.Module):
    """ResNet backbone: (B, in_channels, n_mels, frames) → (B, widths[-1]) by global max pooling.

    Any number of frames works (even 1): every convolution is padded, and the max pool takes
    whatever frequency × time map is left.
    """

    def __init__(
        self,
        layers: tuple[int, ...] = (3, 4, 6, 3),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise FsdError(f"ResNet needs four stages: got layers={layers}, widths={widths}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.layer1 = self._make_stage(widths[0], widths[0], layers[0], stride=1)
        self.layer2 = self._make_stage(widths[0], widths[1], layers[1], stride=2)
        self.layer3 = self._make_stage(widths[1], widths[2], layers[2], stride=2)
        self.layer4 = self._make_stage(widths[2], widths[3], layers[3], stride=2)

        self.global_pool = nn.AdaptiveMaxPool2d(1)
        self.out_features = widths[3]

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _make_stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        """One stage: a (possibly strided) first block, then blocks - 1 shape-keeping ones."""
        stage = [BasicBlock(in_channels, out_channels, stride)]
        stage += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Features of x; with `lengths` (B,), each sample's frames from lengths[b] on are padding and are ignored.

        Masking is exact for the max pools too: after a ReLU every value is ≥ 0, so a zeroed step never wins.
        """
        if lengths is not None:
            # nothing padded: the plain forward (every mask below is None)
            lengths = None if bool((lengths >= x.shape[-1]).all()) else lengths.to(x.device)
        x = masked(x, time_mask(lengths, x.shape[-1]))
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        lengths = halved(lengths)
        x = masked(x, time_mask(lengths, x.shape[-1]))
        x = self.maxpool(x)
        lengths = halved(lengths)
        x = masked(x, time_mask(lengths, x.shape[-1]))  # a pool window may reach one step past the end

        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                lengths = halved(lengths) if block.conv1.stride[-1] == 2 else lengths
                x = block(x, lengths)

        x = self.global_pool(x)
        return torch.flatten(x, 1)


def resnet34(in_channels: int = 1) -> ResNet:
    """The paper's backbone: stages [3, 4, 6, 3] of 64, 128, 256, 512 filters."""
    return ResNet(layers=(3, 4, 6, 3), widths=(64, 128, 256, 512), in_channels=in_channels)
