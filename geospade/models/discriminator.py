"""Multi-scale PatchGAN discriminator on (one-hot class map, image) pairs (pix2pixHD / SPADE).

Each scale is a PatchGAN of ``n_layers`` 4x4 convs (stride 2, the last one stride 1) plus a final
4x4 conv to one logit per patch; the next scale sees the input average-pooled by 2. Every scale
returns the list of its layers' outputs: all but the last feed the feature-matching loss, the
last is the patch logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geospade.errors import GeospadeError
from geospade.models.generator import conv2d
from geospade.models.normalization import one_hot


class PatchDiscriminator(nn.Module):
    """One PatchGAN scale.

    Args:
        in_channels: input channels (classes + image bands).
        ndf: width of the first layer (doubled per layer, at most 512).
        n_layers: 4x4 convs before the output conv.
        spectral_norm: spectral norm on the intermediate convs (each followed by instance norm);
            the first and the output conv are plain.
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 4,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        kernel, pad = 4, 2
        layers: list[nn.Module] = [nn.Sequential(
            conv2d(in_channels, ndf, kernel, stride=2, padding=pad), nn.LeakyReLU(0.2))]
        width = ndf
        for i in range(1, n_layers):
            previous, width = width, min(width * 2, 512)
            stride = 1 if i == n_layers - 1 else 2
            # No bias: instance norm right after removes it.
            layers.append(nn.Sequential(
                conv2d(previous, width, kernel, stride=stride, padding=pad, bias=False,
                       spectral_norm=spectral_norm),
                nn.InstanceNorm2d(width, affine=False),
                nn.LeakyReLU(0.2),
            ))
        layers.append(conv2d(width, 1, kernel, stride=1, padding=pad))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """``num_d`` PatchGANs on the input at full, 1/2, 1/4 ... resolution.

    Args:
        num_classes: classes of the class map (one-hot channels).
        in_channels: image bands.
        ndf: width of each PatchGAN's first layer.
        n_layers: 4x4 convs per PatchGAN.
        num_d: number of scales.
        spectral_norm: spectral norm on the intermediate convs.
    """

    def __init__(self, num_classes: int, in_channels: int, ndf: int = 64, n_layers: int = 4,
                 num_d: int = 2, spectral_norm: bool = True) -> None:
        super().__init__()
        if num_d < 1 or n_layers < 1:
            raise GeospadeError(f"num_d and n_layers must be at least 1, got {num_d}, {n_layers}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.scales = nn.ModuleList(
            PatchDiscriminator(num_classes + in_channels, ndf, n_layers, spectral_norm)
            for _ in range(num_d)
        )

    def forward(self, labels: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        """Judge ``image`` (N, bands, H, W) given its class map.

        Args:
            labels: class indices (N, H, W) (255 = ignore: an all-zero one-hot) or a one-hot
                map (N, K, H, W).
            image: imagery in [-1, 1].

        Returns:
            one list per scale of that scale's layer outputs; ``out[d][-1]`` are its logits.
        """
        segmap = one_hot(labels, self.num_classes, image.dtype)
        if image.is_contiguous(memory_format=torch.channels_last) and not image.is_contiguous():
            segmap = segmap.contiguous(memory_format=torch.channels_last)
        x = torch.cat([segmap, image], dim=1)
        outputs = []
        for i, scale in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            outputs.append(scale(x))
        return outputs
