"""Training losses: GAN losses (hinge, least squares, original), feature matching, KL, VGG19.

The discriminator outputs that these take are what :class:`MultiscaleDiscriminator` returns: one
list per scale of that scale's layer outputs, the last being the patch logits. GAN losses are
averaged over the scales, as in pix2pixHD / SPADE.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from geospade.errors import GeospadeError
from geospade.models.encoder import kl_loss
from geospade.models.normalization import _enum
from geospade.torch_files import read_torch_file

Outputs = Sequence[Sequence[torch.Tensor]]


class GanMode(str, Enum):
    """The adversarial loss."""

    HINGE = "hinge"  # Lim & Ye 2017; SPADE's default
    LS = "ls"  # least squares, Mao et al. 2017
    ORIGINAL = "original"  # the non-saturating BCE loss of Goodfellow et al. 2014


def _logits(outputs: Outputs | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [o[-1] if isinstance(o, (list, tuple)) else o for o in outputs]


def discriminator_loss(real_outputs: Outputs, fake_outputs: Outputs,
                       mode: GanMode | str = GanMode.HINGE) -> torch.Tensor:
    """The discriminator's loss on real and fake outputs, averaged over scales.

    hinge: ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`` (0 when real >= 1, fake <= -1);
    ls: ``mean((D(real) - 1)^2) + mean(D(fake)^2)``; original: BCE with logits (real 1, fake 0).
    """
    mode = _enum(GanMode, mode, "GAN loss")
    real, fake = _logits(real_outputs), _logits(fake_outputs)
    total = real[0].new_zeros(())
    for r, f in zip(real, fake, strict=True):
        r, f = r.float(), f.float()
        if mode is GanMode.HINGE:
            total = total + F.relu(1 - r).mean() + F.relu(1 + f).mean()
        elif mode is GanMode.LS:
            total = total + (r - 1).pow(2).mean() + f.pow(2).mean()
        else:
            total = total + F.binary_cross_entropy_with_logits(r, torch.ones_like(r)) \
                + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
    return total / len(real)


def generator_loss(fake_outputs: Outputs, mode: GanMode | str = GanMode.HINGE) -> torch.Tensor:
    """The generator's adversarial loss, averaged over scales.

    hinge: ``-mean(D(fake))``; ls: ``mean((D(fake) - 1)^2)``; original: BCE with target 1.
    """
    mode = _enum(GanMode, mode, "GAN loss")
    fake = _logits(fake_outputs)
    total = fake[0].new_zeros(())
    for f in fake:
        f = f.float()
        if mode is GanMode.HINGE:
            total = total - f.mean()
        elif mode is GanMode.LS:
            total = total + (f - 1).pow(2).mean()
        else:
            total = total + F.binary_cross_entropy_with_logits(f, torch.ones_like(f))
    return total / len(fake)


def feature_matching_loss(fake_outputs: Outputs, real_outputs: Outputs) -> torch.Tensor:
    """L1 between the discriminator's intermediate features on fake and real images.

    Summed over layers (all but each scale's logits), averaged over scales; real features are
    treated as constants. Multiply by ``lambda_fm`` (10 in SPADE).
    """
    total = fake_outputs[0][0].new_zeros((), dtype=torch.float32)
    for fake, real in zip(fake_outputs, real_outputs, strict=True):
        for f, r in zip(fake[:-1], real[:-1], strict=True):
            total = total + F.l1_loss(f.float(), r.detach().float())
    return total / len(fake_outputs)


# ---------------------------------------------------------------- VGG19 perceptual loss

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of torchvision's vgg19().features, and their weights
# (deeper layers count more), as in pix2pixHD / SPADE.
VGG_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def bands_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Map an image of any band count (N, C, H, W) to 3 channels for VGG.

    The first three bands are taken as R, G, B (NAIP's order: R, G, B, NIR — the NIR band is not
    seen by VGG); one band is repeated three times; two bands become (b0, b1, mean(b0, b1)).
    """
    bands = image.shape[1]
    if bands >= 3:
        return image[:, :3]
    if bands == 2:
        return torch.cat([image, image.mean(dim=1, keepdim=True)], dim=1)
    return image.expand(-1, 3, -1, -1)


def vgg_weights_cache_path() -> Path:
    """Where torchvision keeps (or would download) the VGG19 ImageNet weights."""
    from torchvision.models import VGG19_Weights

    url = VGG19_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _load_features_state(path: Path) -> dict[str, torch.Tensor]:
    state = read_torch_file(path, "VGG19 weights file")
    if not isinstance(state, dict):
        raise GeospadeError(f"{path} is not a VGG19 state dict")
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return state


class VGGLoss(nn.Module):
    """Perceptual loss: weighted L1 between VGG19 features of fake and real images.

    Images are in [-1, 1] with any band count (see :func:`bands_to_rgb`); they are mapped to
    [0, 1] and normalised with the ImageNet mean/std before VGG. VGG's weights are frozen.

    Args:
        weights: None for random weights (tests), "imagenet" for torchvision's ImageNet weights
            (downloaded by torchvision if not cached), or a path to a local state dict (of
            torchvision's ``vgg19()`` or of its ``features``).
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        from torchvision.models import VGG19_Weights, vgg19
        from torchvision.models.vgg import cfgs, make_layers

        last = VGG_SLICES[-1][1]
        if weights == "imagenet":
            features = vgg19(weights=VGG19_Weights.IMAGENET1K_V1).features[:last]
        else:
            # Only the layers the loss uses (no 100M-parameter classifier to initialise).
            features = make_layers(cfgs["E"])[:last]
            if weights is not None:
                state = _load_features_state(Path(weights))
                state = {k: v for k, v in state.items()
                         if k.split(".")[0].isdigit() and int(k.split(".")[0]) < last}
                try:
                    features.load_state_dict(state)
                except RuntimeError:
                    raise GeospadeError(
                        f"{weights} does not hold VGG19 weights (keys or shapes differ)"
                    ) from None
        self.slices = nn.ModuleList(features[a:b] for a, b in VGG_SLICES)
        self.layer_weights = VGG_WEIGHTS
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGLoss:
        return super().train(False)  # VGG stays in eval mode

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = (bands_to_rgb(image) + 1) / 2
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = []
        for block in self.slices:
            x = block(x)
            out.append(x)
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Weighted L1 between VGG features of ``fake`` and (constant) ``real`` (N, C, H, W)."""
        with torch.no_grad():
            real_features = self.features(real)
        total = fake.new_zeros((), dtype=torch.float32)
        for w, f, r in zip(self.layer_weights, self.features(fake), real_features, strict=True):
            total = total + w * F.l1_loss(f.float(), r.float())
        return total


def load_vgg_loss(weights_path: str | Path | None = None, download: bool = True
                  ) -> tuple[VGGLoss | None, str]:
    """Build the VGG19 perceptual loss if its ImageNet weights can be had, else say why not.

    Args:
        weights_path: a local VGG19 state dict (``--vgg-weights``); a bad file is an error.
        download: without a path, let torchvision download the weights when not cached.

    Returns:
        ``(loss, message)``: the loss and where its weights came from, or ``(None, reason)`` when
        the weights are unavailable (then the perceptual loss is off; print the reason).
    """
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise GeospadeError(f"VGG19 weights not found: {path}")
        return VGGLoss(path), f"VGG19 perceptual loss with weights from {path}"
    cached = vgg_weights_cache_path()
    if not cached.is_file() and not download:
        return None, (f"VGG19 ImageNet weights are not cached ({cached}) and download is off: "
                      "perceptual (VGG) loss OFF; pass --vgg-weights PATH to use it")
    try:
        loss = VGGLoss("imagenet")
    except Exception as exc:  # noqa: BLE001 - no network, proxy, disk full: all mean "off"
        first = " ".join(str(exc).split())[:160] or type(exc).__name__
        return None, (f"VGG19 ImageNet weights unavailable ({first}): perceptual (VGG) loss OFF; "
                      "pass --vgg-weights PATH to use it")
    return loss, f"VGG19 perceptual loss with torchvision ImageNet weights ({cached})"


__all__ = ["GanMode", "VGGLoss", "bands_to_rgb", "discriminator_loss", "feature_matching_loss",
           "generator_loss", "kl_loss", "load_vgg_loss", "vgg_weights_cache_path"]
