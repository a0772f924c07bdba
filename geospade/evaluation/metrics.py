"""Image-quality metrics: per-class spectral distance, texture, FID (docs/design.md,
"Evaluation report").

Everything here works on *normalised* images (float32, ``(C, H, W)`` in [-1, 1], see
:mod:`geospade.normalization`) and class-index masks (``(H, W)`` uint8, 255 = ignore), chip by
chip, so a whole split is measured in bounded memory:

- :class:`SpectralHistograms` keeps, per class and band, a fixed-bin histogram of pixel values
  (``bins`` bins on [-1, 1]; 256 bins for uint8 imagery, where every source value falls exactly on
  one bin, so the distance is exact). Memory is ``classes x bands x bins`` counters, whatever the
  number of chips. The 1-D Wasserstein distance between two histograms is the area between their
  cumulative distributions.
- :class:`TextureStats` keeps, per class, the sum and count of within-class gradient magnitudes.
- :func:`wasserstein_1d` is the exact distance between two samples (sorted quantiles), shared
  with training's validation (:mod:`geospade.training.validation`), used for checks and small
  samples.
- :func:`frechet_distance` and :func:`inception_features` give FID when Inception weights are on
  this machine (:func:`find_inception_weights`); nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geospade.errors import GeospadeError, first_line
from geospade.schemes import IGNORE_INDEX
from geospade.torch_files import read_torch_file
from geospade.training.validation import wasserstein_1d

__all__ = [
    "SpectralHistograms", "TextureStats", "bins_for_dtype", "find_inception_weights",
    "frechet_distance", "gradient_magnitude", "inception_features", "load_inception", "nanmean",
    "rgb_band_indices", "wasserstein_1d",
]

DEFAULT_BINS = 1024


def bins_for_dtype(dtype: str) -> int:
    """Histogram bins for imagery of ``dtype``: 256 for uint8 (exact), else :data:`DEFAULT_BINS`."""
    return 256 if np.dtype(dtype) == np.uint8 else DEFAULT_BINS


def _valid(mask: np.ndarray) -> np.ndarray:
    return mask != IGNORE_INDEX


class SpectralHistograms:
    """Per-class, per-band histograms of normalised pixel values, accumulated chip by chip.

    Values in [-1, 1] are snapped to the nearest of ``bins`` equally spaced levels (``-1`` and
    ``1`` included). With 256 levels this is exact for uint8 imagery normalised from 0..255.
    Pixels with a NaN or infinite value in any band are skipped, like ignored ones.

    Args:
        num_classes: number of classes K (mask values 0..K-1; others are ignored).
        bands: number of image bands.
        bins: number of levels on [-1, 1].
    """

    def __init__(self, num_classes: int, bands: int, bins: int = DEFAULT_BINS):
        self.num_classes = num_classes
        self.bands = bands
        self.bins = bins
        self.counts = np.zeros((num_classes, bands, bins), dtype=np.int64)

    @property
    def step(self) -> float:
        """Distance between two levels, in normalised units."""
        return 2.0 / (self.bins - 1)

    def add(self, image: np.ndarray, mask: np.ndarray) -> None:
        """Add the pixels of one normalised image ``(C, H, W)`` under its mask ``(H, W)``."""
        if image.shape[0] != self.bands or image.shape[1:] != mask.shape:
            raise GeospadeError(
                f"image {tuple(image.shape)} does not match {self.bands} bands and mask "
                f"{tuple(mask.shape)}"
            )
        # Pixels with a non-finite band are no data (issue 16), like the ignore index.
        valid = _valid(mask) & (mask < self.num_classes) & np.isfinite(image).all(axis=0)
        if not valid.any():
            return
        cls = mask[valid].astype(np.int64)
        level = np.rint((np.clip(image[:, valid], -1.0, 1.0) + 1.0) / self.step).astype(np.int64)
        for b in range(self.bands):
            flat = cls * self.bins + level[b]
            self.counts[:, b] += np.bincount(flat, minlength=self.num_classes * self.bins).reshape(
                self.num_classes, self.bins
            )

    def pixels(self) -> np.ndarray:
        """Pixels seen per class, ``(K,)``."""
        return self.counts[:, 0].sum(axis=1)

    def distance(self, other: SpectralHistograms) -> np.ndarray:
        """Wasserstein-1 distance per class and band ``(K, C)`` in normalised units.

        Classes with no pixels in either histogram get NaN.
        """
        if self.counts.shape != other.counts.shape:
            raise GeospadeError("histograms of different classes, bands or bins cannot be compared")
        a = self.counts.astype(np.float64)
        b = other.counts.astype(np.float64)
        na, nb = a.sum(axis=2, keepdims=True), b.sum(axis=2, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            cdf_a = np.cumsum(a, axis=2) / na
            cdf_b = np.cumsum(b, axis=2) / nb
        dist = np.abs(cdf_a - cdf_b)[..., :-1].sum(axis=2) * self.step
        empty = (na[..., 0] == 0) | (nb[..., 0] == 0)
        dist[empty] = np.nan
        return dist


def gradient_magnitude(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Within-class gradient magnitude of a normalised image, and the class of each pixel.

    The gradient at a pixel uses forward differences to its right and lower neighbours, averaged
    over bands; it is kept only where both neighbours have the pixel's own class, so edges between
    classes (which a flat "paint by class" image also has) never count as texture, and only where
    it is finite (a NaN or infinite pixel is no data).

    Args:
        image: ``(C, H, W)`` float image.
        mask: ``(H, W)`` class indices.

    Returns:
        ``(magnitudes, classes)``: two 1-D arrays over the kept pixels.
    """
    img = image.astype(np.float32)
    dx = img[:, :-1, 1:] - img[:, :-1, :-1]
    dy = img[:, 1:, :-1] - img[:, :-1, :-1]
    mag = np.sqrt(dx * dx + dy * dy).mean(axis=0)
    m = mask[:-1, :-1]
    # A non-finite pixel or neighbour gives a non-finite magnitude: no data, left out.
    keep = (m == mask[:-1, 1:]) & (m == mask[1:, :-1]) & _valid(m) & np.isfinite(mag)
    return mag[keep], m[keep]


class TextureStats:
    """Per-class mean within-class gradient magnitude, accumulated chip by chip.

    Args:
        num_classes: number of classes K.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.total = np.zeros(num_classes, dtype=np.float64)
        self.count = np.zeros(num_classes, dtype=np.int64)

    def add(self, image: np.ndarray, mask: np.ndarray) -> None:
        """Add one normalised image ``(C, H, W)`` under its mask ``(H, W)``."""
        mag, cls = gradient_magnitude(image, mask)
        inside = cls < self.num_classes
        mag, cls = mag[inside], cls[inside].astype(np.int64)
        self.total += np.bincount(cls, weights=mag, minlength=self.num_classes)
        self.count += np.bincount(cls, minlength=self.num_classes)

    def mean(self) -> np.ndarray:
        """Mean gradient magnitude per class ``(K,)``; NaN for classes never seen."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)

    def ratio(self, real: TextureStats) -> np.ndarray:
        """Generated (self) over real mean gradient magnitude per class; 1.0 is ideal."""
        with np.errstate(invalid="ignore", divide="ignore"):
            r = self.mean() / real.mean()
        return np.where(real.mean() > 0, r, np.nan)


def nanmean(values: Sequence[float] | np.ndarray) -> float | None:
    """Mean of the finite values, or None when there are none (JSON-friendly)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else None


# -- FID -----------------------------------------------------------------------------------------

INCEPTION_FILES = ("inception_v3_google-0cc3c7bd.pth", "inception_v3_google-1a9a5a14.pth")
"""torchvision's ImageNet Inception v3 weight files, as torch hub caches them."""


def find_inception_weights(path: str | os.PathLike | None = None) -> Path | None:
    """A local Inception v3 weight file, or None: ``path`` if given, else the torch hub cache.

    Looks at ``path``, then ``$GEOSPADE_INCEPTION_WEIGHTS``, then torch hub's checkpoint folder
    for torchvision's file names. Never downloads.

    Raises:
        GeospadeError: ``path`` or ``$GEOSPADE_INCEPTION_WEIGHTS`` names a missing file.
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise GeospadeError(f"Inception weights not found: {p}")
        return p
    env = os.environ.get("GEOSPADE_INCEPTION_WEIGHTS")
    if env:
        if not Path(env).is_file():
            raise GeospadeError(f"Inception weights not found: {env} "
                                "(from $GEOSPADE_INCEPTION_WEIGHTS)")
        return Path(env)
    import torch.hub

    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in INCEPTION_FILES:
        if (hub / name).is_file():
            return hub / name
    return None


def load_inception(weights: Path, device: str = "cpu"):
    """torchvision's Inception v3 with local ImageNet weights, returning 2048-d pool features.

    The weights (ported from Google's TensorFlow model) take images scaled to [-1, 1]:
    torchvision feeds them ImageNet-normalised images and rescales them with
    ``transform_input=True``. :func:`inception_features` passes [-1, 1] images straight in,
    so the net is built with ``transform_input=False``: the same inputs, without the round trip.
    """
    import torch
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    state = read_torch_file(weights, "Inception v3 weights file")
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise GeospadeError(f"{weights} does not hold torchvision's Inception v3 weights "
                            f"({first_line(exc)})") from None
    net.fc = torch.nn.Identity()
    return net.eval().to(device)


def inception_features(net, images: np.ndarray, device: str = "cpu", batch: int = 16) -> np.ndarray:
    """2048-d Inception features of RGB images ``(N, 3, H, W)`` normalised to [-1, 1].

    Each image is resized to 299 x 299 (bilinear) and given to ``net`` in [-1, 1], the scaling
    its weights were trained with (see :func:`load_inception`).
    """
    import torch
    import torch.nn.functional as F

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).float().to(device)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(net(x).cpu().numpy().astype(np.float64))
    return np.concatenate(out)


def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``(N, D)`` (the FID formula).

    A squared distance, so never negative: float rounding of equal distributions (about 1e-8
    of the traces) is returned as 0.
    """
    mu_a, mu_b = feat_a.mean(axis=0), feat_b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(feat_a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(feat_b, rowvar=False))
    # tr(sqrt(A B)) = sum of sqrt of the eigenvalues of sqrt(A) B sqrt(A), which is symmetric.
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    tr_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu_a - mu_b
    return max(0.0, float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt))


def rgb_band_indices(band_names: Sequence[str]) -> list[int] | None:
    """Indices of the red, green and blue bands (by name, else the first three), or None."""
    names = [n.lower() for n in band_names]
    if all(c in names for c in ("red", "green", "blue")):
        return [names.index("red"), names.index("green"), names.index("blue")]
    if len(names) >= 3:
        return [0, 1, 2]
    return None
