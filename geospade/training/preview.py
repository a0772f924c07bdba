"""Preview images written during training: class map | real | generated, one row per chip."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geospade.schemes import IGNORE_INDEX


def colourize(mask: torch.Tensor | np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class indices ``(H, W)`` -> RGB ``(H, W, 3)`` uint8 in scheme colours (ignore: black)."""
    mask = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = palette
    table[IGNORE_INDEX] = 0
    return table[mask.astype(np.uint8)]


def to_rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Image ``(C, H, W)`` in [-1, 1] -> RGB uint8 ``(H, W, 3)`` from its first three bands
    (one band is shown grey; two bands give red and green)."""
    image = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else image
    bands = image[:3]
    if bands.shape[0] == 1:
        bands = np.repeat(bands, 3, axis=0)
    elif bands.shape[0] == 2:
        bands = np.concatenate([bands, np.full_like(bands[:1], -1.0)])
    rgb = (np.clip(bands, -1, 1) + 1) * 127.5
    return np.rint(rgb).astype(np.uint8).transpose(1, 2, 0)


def preview_grid(
    masks: torch.Tensor,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    palette: np.ndarray,
    gap: int = 2,
) -> np.ndarray:
    """A ``rows x 3`` grid (class map | real | generated) as an RGB uint8 array.

    Args:
        masks: ``(N, H, W)`` class indices.
        reals: ``(N, C, H, W)`` real images in [-1, 1].
        fakes: ``(N, C, H, W)`` generated images in [-1, 1].
        palette: ``(K, 3)`` uint8 class colours.
        gap: white pixels between tiles.
    """
    n, h, w = masks.shape
    grid = np.full((n * h + (n + 1) * gap, 3 * w + 4 * gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        tiles: Sequence[np.ndarray] = (
            colourize(masks[i], palette), to_rgb(reals[i]), to_rgb(fakes[i])
        )
        top = gap + i * (h + gap)
        for j, tile in enumerate(tiles):
            left = gap + j * (w + gap)
            grid[top : top + h, left : left + w] = tile
    return grid


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 array as PNG under a temporary name, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
