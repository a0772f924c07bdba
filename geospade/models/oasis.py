"""The OASIS discriminator and its losses (Schönfeld et al., ICLR 2021, "You Only Need
Adversarial Supervision for Semantic Image Synthesis", https://arxiv.org/abs/2012.04781).

Instead of judging (class map, image) pairs patch by patch, the discriminator segments the image
alone into ``N + 1`` classes: the ``N`` land-cover classes and "fake" (index ``N``, the last
channel). Real pixels should be classified as their class, generated pixels as "fake"; the
generator wants its pixels classified as the class it was asked for. Every pixel gets a
supervised signal tied to its class, which the paper shows is enough without the VGG
perceptual loss and feature matching.

* **Class balancing.** Cross-entropies toward the classes are weighted per pixel by the inverse
  frequency of its class in the batch's class map, so rare classes count as much as common
  ones (the paper's eq. 2 weights ``alpha_c``). Pixels with the ignore index (255) count nowhere.
* **LabelMix** (the paper's section 3.2): real and fake images are mixed with a binary mask that
  takes whole classes from one or the other; the discriminator's logits on the mix should be the
  same mix of its logits on the real and the fake image. It keeps the discriminator attending to
  content and class boundaries rather than image statistics.

The discriminator is a U-Net of residual blocks with spectral norm (no normalisation layers):
an encoder of stride-2 blocks down to a 4x4 map (depth chosen from the chip size: 4 at 64 px,
6 at 256 px as in the paper) and a decoder back to full resolution with skip connections.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from geospade.errors import GeospadeError
from geospade.models.generator import LEAKY_SLOPE
from geospade.models.normalization import class_rows
from geospade.schemes import IGNORE_INDEX

MAX_WIDTH_FACTOR = 8  # encoder widths ndf x 1, 2, 4, 8, 8, ...: 512 channels at most with ndf 64
SMALLEST_SIDE = 4  # the encoder stops halving at this side (the paper: 256 px -> 4 px)
MAX_DEPTH = 6  # the paper's depth at 256 px


def oasis_depth(crop_size: int) -> int:
    """How many stride-2 blocks the discriminator has for ``crop_size`` chips: halve while the
    side stays even and at least :data:`SMALLEST_SIDE` (at most :data:`MAX_DEPTH`, at least 1).

    64 px -> 4, 32 px -> 3, 256 px -> 6.
    """
    depth, side = 0, int(crop_size)
    while depth < MAX_DEPTH and side % 2 == 0 and side // 2 >= SMALLEST_SIDE:
        side //= 2
        depth += 1
    return max(depth, 1)


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


def conv(in_channels: int, out_channels: int, kernel_size: int, spectral_norm: bool
         ) -> nn.Module:
    """A stride-1 "same" conv with PyTorch's default initialisation, optionally spectrally
    normalised.

    Not the generator's small-gain (0.02) initialisation: with no normalisation layer between
    them, the discriminator's scale rests on spectral norm's one power iteration per step, which
    tracks sigma only while each Adam step is small next to the weights. From 0.02-gain weights
    the first steps (about ``lr`` per weight) turned them so far that sigma was underestimated
    and the logits reached 2000 after one step.
    """
    layer = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    return _spectral_norm(layer) if spectral_norm else layer


class DownBlock(nn.Module):
    """Residual block halving the resolution: ``pool(conv_1(act(conv_0(act(x))))) +
    conv_s(pool(x))`` (``conv_s``, 1x1, only when the width changes).

    Args:
        in_channels, out_channels: widths of input and output.
        first: the block that sees the image: no activation before its first conv.
        spectral_norm: spectral norm on its convs.
    """

    def __init__(self, in_channels: int, out_channels: int, first: bool = False,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        self.first = first
        self.conv_0 = conv(in_channels, out_channels, 3, spectral_norm)
        self.conv_1 = conv(out_channels, out_channels, 3, spectral_norm)
        self.conv_s = (conv(in_channels, out_channels, 1, spectral_norm)
                       if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_1(_leaky(self.conv_0(x if self.first else _leaky(x))))
        # Pooling before the 1x1 shortcut conv: the same function (both are linear), 4x cheaper.
        shortcut = F.avg_pool2d(x, 2)
        if self.conv_s is not None:
            shortcut = self.conv_s(shortcut)
        return shortcut + F.avg_pool2d(h, 2)


class UpBlock(nn.Module):
    """Residual block doubling the resolution (nearest) before ``conv_1(act(conv_0(act(x))))``,
    with a 1x1 shortcut conv when the width changes.

    Args:
        in_channels, out_channels: widths of input (with its skip connection) and output.
        spectral_norm: spectral norm on its convs.
    """

    def __init__(self, in_channels: int, out_channels: int, spectral_norm: bool = True) -> None:
        super().__init__()
        self.conv_0 = conv(in_channels, out_channels, 3, spectral_norm)
        self.conv_1 = conv(out_channels, out_channels, 3, spectral_norm)
        self.conv_s = (conv(in_channels, out_channels, 1, spectral_norm)
                       if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        h = self.conv_1(_leaky(self.conv_0(_leaky(x))))
        return (x if self.conv_s is None else self.conv_s(x)) + h


class OasisDiscriminator(nn.Module):
    """Segmentation discriminator: image (N, bands, H, W) -> logits (N, num_classes + 1, H, W),
    the last channel being "fake".

    Encoder widths ``ndf x 1, 2, 4, 8, 8, ...``; the decoder mirrors them, each of its blocks
    after the first seeing the encoder's output of the same resolution concatenated to its
    input; a 1x1 conv gives the logits.

    Args:
        num_classes: land-cover classes (the logits have one more channel, "fake").
        in_channels: image bands.
        ndf: width of the first block (64 in the paper, which uses 128 from the second on).
        crop_size: chip size; sets the depth (:func:`oasis_depth`) unless ``depth`` is given.
        depth: stride-2 blocks; images must have sides that are multiples of ``2 ** depth``.
        spectral_norm: spectral norm on every conv but the last.
    """

    def __init__(self, num_classes: int, in_channels: int, ndf: int = 64, crop_size: int = 64,
                 depth: int | None = None, spectral_norm: bool = True) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1 or ndf < 1:
            raise GeospadeError(
                f"num_classes, in_channels and ndf must be at least 1, got {num_classes}, "
                f"{in_channels}, {ndf}"
            )
        depth = oasis_depth(crop_size) if depth is None else depth
        if depth < 1:
            raise GeospadeError(f"OASIS discriminator depth must be at least 1, got {depth}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.depth = depth
        widths = [ndf * min(2 ** i, MAX_WIDTH_FACTOR) for i in range(depth)]
        self.down = nn.ModuleList(
            DownBlock(in_channels if i == 0 else widths[i - 1], widths[i], first=i == 0,
                      spectral_norm=spectral_norm)
            for i in range(depth)
        )
        # Decoder block j works at the resolution of encoder block i = depth - 1 - j; all but
        # the first also take that block's output (a skip connection of the same width).
        self.up = nn.ModuleList(
            UpBlock(widths[i] * (1 if i == depth - 1 else 2), widths[max(i - 1, 0)],
                    spectral_norm=spectral_norm)
            for i in reversed(range(depth))
        )
        self.classify = conv(widths[0], num_classes + 1, 1, spectral_norm=False)

    @property
    def fake_index(self) -> int:
        """The channel of the "fake" class: ``num_classes``."""
        return self.num_classes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits of the classes and "fake" for ``image`` (N, bands, H, W).

        Raises:
            GeospadeError: not 4-D with ``in_channels`` bands, or a side not a multiple of
                ``2 ** depth``.
        """
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise GeospadeError(f"OASIS discriminator expects (N, {self.in_channels}, H, W) "
                                f"images, got {tuple(image.shape)}")
        step = 2 ** self.depth
        if image.shape[-2] % step or image.shape[-1] % step:
            raise GeospadeError(
                f"image size {image.shape[-2]}x{image.shape[-1]} is not a multiple of {step} "
                f"(2 ** the OASIS discriminator's depth {self.depth})"
            )
        skips = []
        x = image
        for block in self.down:
            x = block(x)
            skips.append(x)
        for j, block in enumerate(self.up):
            if j:
                x = torch.cat([skips[self.depth - 1 - j], x], dim=1)
            x = block(x)
        return self.classify(_leaky(x))


# ------------------------------------------------------------------------------------- losses


def class_balance_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class weights ``V / (P * count_c)`` from a class map (N, H, W): ``V`` valid pixels
    (not the ignore index), ``P`` classes present, ``count_c`` pixels of class ``c``; 0 for an
    absent class. The weighted pixels of every present class sum to ``V / P``: each class
    counts equally, however rare (OASIS's inverse-frequency weights).

    Returns:
        float32 tensor (num_classes,).
    """
    valid = (labels >= 0) & (labels < num_classes)
    counts = torch.bincount(labels[valid].long(), minlength=num_classes)[:num_classes].float()
    present = (counts > 0).sum()
    weights = valid.sum() / (present * counts).clamp(min=1)
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def _pixel_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy in float32, 0 where ``target`` is the ignore index."""
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")


def balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class-balanced cross-entropy of per-pixel logits (N, K + 1, H, W) toward the class map
    (N, H, W): the mean over the classes present of each class's mean cross-entropy (weights
    from :func:`class_balance_weights`); ignore pixels (255) do not count.
    """
    num_classes = logits.shape[1] - 1
    rows = class_rows(labels.long(), num_classes)  # ignore pixels -> row num_classes (weight 0)
    target = torch.where(rows < num_classes, rows, IGNORE_INDEX)
    weights = torch.cat([class_balance_weights(labels, num_classes), logits.new_zeros(1).float()])
    valid = (rows < num_classes).sum().clamp(min=1)
    return (_pixel_cross_entropy(logits, target) * weights[rows]).sum() / valid


def fake_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of per-pixel logits (N, K + 1, H, W) toward "fake" (channel K) over
    the pixels whose class (``labels``, N, H, W) is not the ignore index (unweighted, as in
    OASIS)."""
    num_classes = logits.shape[1] - 1
    valid = (labels >= 0) & (labels < num_classes)
    target = torch.where(valid, num_classes, IGNORE_INDEX).long()
    return _pixel_cross_entropy(logits, target).sum() / valid.sum().clamp(min=1)


def oasis_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                             labels: torch.Tensor) -> torch.Tensor:
    """The OASIS discriminator's adversarial loss: real pixels toward their class
    (class-balanced) plus fake pixels toward "fake".

    Args:
        real_logits, fake_logits: discriminator outputs (N, K + 1, H, W) on real and generated
            images of the class map ``labels`` (N, H, W), 255 = ignore.

    Returns:
        float32 scalar.
    """
    return balanced_cross_entropy(real_logits, labels) + fake_cross_entropy(fake_logits, labels)


def oasis_generator_loss(fake_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The OASIS generator's adversarial loss: its pixels toward the class they were generated
    for (class-balanced). ``fake_logits`` (N, K + 1, H, W), ``labels`` (N, H, W)."""
    return balanced_cross_entropy(fake_logits, labels)


def labelmix_mask(labels: torch.Tensor, num_classes: int,
                  rng: torch.Generator | None = None) -> torch.Tensor:
    """LabelMix's binary mask (N, 1, H, W) (bool): for each image and each class (and the ignore
    index) a fair coin says whether its pixels come from the real image (True) or the fake.

    Args:
        labels: class map (N, H, W).
        num_classes: classes of the scheme.
        rng: generator for the coins (on ``labels``' device); default torch's global one.
    """
    n, h, w = labels.shape
    coins = torch.randint(0, 2, (n, num_classes + 1), device=labels.device, generator=rng,
                          dtype=torch.bool)
    rows = class_rows(labels.long(), num_classes).view(n, h * w)
    return torch.gather(coins, 1, rows).view(n, 1, h, w)


def labelmix(real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``real`` where ``mask`` (N, 1, H, W), else ``fake``: the mixed image (N, C, H, W)."""
    return torch.where(mask, real, fake)


def labelmix_loss(mixed_logits: torch.Tensor, real_logits: torch.Tensor,
                  fake_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LabelMix consistency: mean squared difference between the logits on the mixed image and
    the same mix of the logits on the real and the fake image (0 when real == fake). Multiply
    by ``lambda_labelmix`` (10 in OASIS).

    Args:
        mixed_logits, real_logits, fake_logits: discriminator outputs (N, K + 1, H, W).
        mask: the mask the mixed image was made with (N, 1, H, W), True = real.

    Returns:
        float32 scalar.
    """
    target = torch.where(mask, real_logits.float(), fake_logits.float())
    return F.mse_loss(mixed_logits.float(), target)


__all__ = ["DownBlock", "OasisDiscriminator", "UpBlock", "balanced_cross_entropy",
           "class_balance_weights", "fake_cross_entropy", "labelmix", "labelmix_loss",
           "labelmix_mask", "oasis_depth", "oasis_discriminator_loss", "oasis_generator_loss"]
