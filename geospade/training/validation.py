"""Per-class spectral comparisons of generated and real imagery over the same class maps.

The spectral distance (docs/design.md, "Evaluation report"): for each
class and band, the 1-D Wasserstein (earth mover's) distance between the values of the real and
the generated pixels of that class. Because both images share the mask, the two samples have the
same size, and the distance is the mean absolute difference of the sorted values. Units are those
of the inputs (the model's [-1, 1] in training).
"""

from __future__ import annotations

import numpy as np
import torch

from geospade.schemes import IGNORE_INDEX


def _as_numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().float().cpu().numpy() if a.is_floating_point() else a.cpu().numpy()
    return np.asarray(a)


def _batched(real, fake, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    real, fake, mask = _as_numpy(real), _as_numpy(fake), _as_numpy(mask)
    if real.ndim == 3:
        real, fake, mask = real[None], fake[None], mask[None]
    if real.shape != fake.shape or real.shape[:1] + real.shape[2:] != mask.shape:
        raise ValueError(
            f"shapes differ: real {real.shape}, generated {fake.shape}, mask {mask.shape}"
        )
    return real, fake, mask


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """1-D Wasserstein-1 distance between two samples (any sizes; NaN if either is empty)."""
    a, b = np.sort(np.ravel(a).astype(np.float64)), np.sort(np.ravel(b).astype(np.float64))
    if a.size == 0 or b.size == 0:
        return float("nan")
    if a.size == b.size:
        return float(np.abs(a - b).mean())
    # Integrate |F_a - F_b| over the merged support.
    values = np.concatenate([a, b])
    values.sort()
    deltas = np.diff(values)
    cdf_a = np.searchsorted(a, values[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, values[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * deltas))


def spectral_distance(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    num_classes: int,
) -> np.ndarray:
    """Per-class, per-band 1-D Wasserstein distance of real vs generated pixel values.

    Args:
        real: real images ``(N, C, H, W)`` or ``(C, H, W)``.
        fake: generated images of the same masks, same shape.
        mask: class indices ``(N, H, W)`` or ``(H, W)``; the ignore index (255) is skipped.
        num_classes: K.

    Returns:
        ``(K, C)`` float64 array; rows of classes absent from ``mask`` are NaN.
    """
    return _per_class(real, fake, mask, num_classes, lambda r, f: [
        wasserstein_1d(r[c], f[c]) for c in range(r.shape[0])
    ])


def mean_colour_error(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    num_classes: int,
) -> np.ndarray:
    """Per-class, per-band absolute difference of the mean real and mean generated value.

    Returns:
        ``(K, C)`` float64 array; NaN for classes absent from ``mask``.
    """
    return _per_class(real, fake, mask, num_classes,
                      lambda r, f: np.abs(r.mean(axis=1) - f.mean(axis=1)))


def _per_class(real, fake, mask, num_classes: int, compare) -> np.ndarray:
    """``(K, C)`` array of ``compare(real_px, fake_px)`` over each class's pixels (``(C, n)``
    each); NaN rows for classes absent from ``mask``."""
    real, fake, mask = _batched(real, fake, mask)
    bands = real.shape[1]
    out = np.full((num_classes, bands), np.nan)
    real_px = real.transpose(1, 0, 2, 3).reshape(bands, -1)
    fake_px = fake.transpose(1, 0, 2, 3).reshape(bands, -1)
    flat = mask.reshape(-1)
    for k in range(num_classes):
        sel = flat == k
        if sel.any():
            out[k] = compare(real_px[:, sel], fake_px[:, sel])
    return out


def class_pixel_counts(mask: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    """Pixels per class index (the ignore index is not counted)."""
    flat = _as_numpy(mask).reshape(-1)
    flat = flat[flat != IGNORE_INDEX]
    return np.bincount(flat.astype(np.int64), minlength=num_classes)[:num_classes]
