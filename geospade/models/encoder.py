"""Style encoder (VAE) for style-guided and multi-modal synthesis, and its KL loss.

An image is encoded to the mean and log-variance of a Gaussian over the generator's code z;
training samples z with the reparameterisation trick and adds ``kl_loss`` so that z ~ N(0, 1)
can be drawn at synthesis time (Kingma & Welling 2014; SPADE section 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geospade.models.generator import conv2d, init_weights


class StyleEncoder(nn.Module):
    """Image (N, bands, H, W) -> (mu, logvar), each (N, z_dim).

    3x3 stride-2 convs (spectral norm + instance norm, leaky ReLU), widths 1, 2, 4, 8, 8, 8 x
    ``ndf``, as many as bring ``crop_size`` down to 4x4 (six at 256 px), then an adaptive average
    pool to 4x4 (so other sizes work too) and two linear heads.

    Args:
        in_channels: image bands.
        ndf: base width.
        z_dim: size of the code.
        crop_size: chip size the encoder is meant for.
        spectral_norm: spectral norm on the convs.
    """

    def __init__(self, in_channels: int, ndf: int = 64, z_dim: int = 256, crop_size: int = 256,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        n_layers = min(6, max(1, (max(crop_size, 8) // 4).bit_length() - 1))
        widths = [ndf * min(2 ** i, 8) for i in range(n_layers)]
        layers = []
        previous = in_channels
        for width in widths:
            layers.append(nn.Sequential(
                conv2d(previous, width, 3, stride=2, padding=1, bias=False,
                       spectral_norm=spectral_norm),
                nn.InstanceNorm2d(width, affine=False),
            ))
            previous = width
        self.layers = nn.ModuleList(layers)
        self.fc_mu = init_weights(nn.Linear(previous * 16, z_dim))
        self.fc_logvar = init_weights(nn.Linear(previous * 16, z_dim))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns:
            ``(mu, logvar)`` of the code's Gaussian, each (N, z_dim).
        """
        x = image
        for i, layer in enumerate(self.layers):
            x = layer(F.leaky_relu(x, 0.2) if i else x)
        x = F.adaptive_avg_pool2d(F.leaky_relu(x, 0.2), 4).flatten(1)
        return self.fc_mu(x), self.fc_logvar(x)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Sample ``z = mu + exp(logvar / 2) * eps`` with eps ~ N(0, 1)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), summed over z's dimensions, averaged over the batch.

    Zero exactly when mu = 0 and logvar = 0. (The reference sums over the batch too; averaging
    keeps the weight ``lambda_kld`` independent of the batch size.)
    """
    per_sample = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    return per_sample.mean()
