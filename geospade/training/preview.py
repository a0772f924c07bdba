"""Images written during training: previews (class map | real | generated, one row per chip;
``RUN/previews/step_N.png``) and validation bar charts (``RUN/validation/step_N.png``). Layout of
the run folder: docs/design.md, "Run folder".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from geospade.atomic import atomic_path
from geospade.data.chips import ChipDataset
from geospade.schemes import IGNORE_INDEX


def colourize(mask: torch.Tensor | np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class indices ``(H, W)`` -> RGB ``(H, W, 3)`` uint8 in scheme colours (ignore: black)."""
    mask = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = palette
    table[IGNORE_INDEX] = 0
    return table[mask.astype(np.uint8)]


PREVIEW_MIN_SIZE = 256
"""Chips smaller than this (pixels) are enlarged, pixel by pixel, in previews and figures: a
64-px chip drawn at 64 screen pixels is too small to judge."""


def upscale_nearest(image: np.ndarray, min_size: int = PREVIEW_MIN_SIZE) -> np.ndarray:
    """``image`` ``(H, W)`` or ``(H, W, C)`` enlarged by the smallest whole factor that makes
    both sides at least ``min_size``, each pixel repeated (nearest neighbour: no new values)."""
    factor = max(1, -(-min_size // max(1, min(image.shape[0], image.shape[1]))))
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def to_rgb(image: torch.Tensor | np.ndarray, rgb: Sequence[int] | None = None) -> np.ndarray:
    """Image ``(C, H, W)`` in [-1, 1] -> RGB uint8 ``(H, W, 3)`` from bands ``rgb`` (0-based
    red, green, blue: :attr:`geospade.formats.chip_store.ChipStore.rgb`), else its first three
    bands (one band is shown grey; two bands give red and green)."""
    image = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else image
    bands = image[list(rgb)] if rgb is not None else image[:3]
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
    rgb: Sequence[int] | None = None,
    min_size: int = PREVIEW_MIN_SIZE,
) -> np.ndarray:
    """A ``rows x 3`` grid (class map | real | generated) as an RGB uint8 array.

    Args:
        masks: ``(N, H, W)`` class indices.
        reals: ``(N, C, H, W)`` real images in [-1, 1].
        fakes: ``(N, C, H, W)`` generated images in [-1, 1].
        palette: ``(K, 3)`` uint8 class colours.
        gap: white pixels between tiles.
        rgb: the bands drawn as red, green, blue (:func:`to_rgb`).
        min_size: chips are enlarged (nearest neighbour) to at least this many pixels.
    """
    n = masks.shape[0]
    h, w = upscale_nearest(np.empty(masks.shape[1:], np.uint8), min_size).shape
    grid = np.full((n * h + (n + 1) * gap, 3 * w + 4 * gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        tiles: Sequence[np.ndarray] = [upscale_nearest(t, min_size) for t in (
            colourize(masks[i], palette), to_rgb(reals[i], rgb), to_rgb(fakes[i], rgb))]
        top = gap + i * (h + gap)
        for j, tile in enumerate(tiles):
            left = gap + j * (w + gap)
            grid[top : top + h, left : left + w] = tile
    return grid


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 array as PNG, whole or not at all (:func:`~geospade.atomic.atomic_path`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def fixed_batch(dataset: ChipDataset, n: int) -> dict[str, torch.Tensor]:
    """The first ``n`` chips of ``dataset``, not augmented: the same previews at every step.

    Returns:
        ``{"mask": (n, H, W), "image": (n, C, H, W), "rgb": the store's RGB bands}``.
    """
    saved, dataset.augment = dataset.augment, False
    try:
        items = [dataset[i] for i in range(min(n, len(dataset)))]
    finally:
        dataset.augment = saved
    return {"mask": torch.stack([i["mask"] for i in items]),
            "image": torch.stack([i["image"] for i in items]),
            "rgb": getattr(getattr(dataset, "store", None), "rgb", None)}


def random_inputs(generator: nn.Module, n: int, rng: torch.Generator, device: torch.device
                  ) -> dict[str, Any]:
    """Keyword arguments that draw ``generator``'s random inputs for ``n`` images from ``rng``:
    a VAE's style code ``z`` and the noise (``noise_dim > 0``).

    Previews and validation pass a ``torch.Generator().manual_seed(seed)``: they then show the
    same draw at every step, and they leave torch's global RNG, which training draws from,
    untouched (exact resume; the same state on every rank).

    Args:
        generator: the generator to call.
        n: images in the batch.
        rng: a CPU generator (its state advances).
        device: the generator's device.

    Returns:
        ``{"rng": rng}``, with ``"z"`` for a VAE generator.
    """
    inputs: dict[str, Any] = {"rng": rng}
    if getattr(generator, "use_vae", False):
        inputs["z"] = torch.randn(n, generator.z_dim, generator=rng).to(device)
    return inputs


@torch.no_grad()
def write_preview(generator: nn.Module, batch: dict[str, torch.Tensor], palette: np.ndarray,
                  device: torch.device,
                  autocast: Callable[[], contextlib.AbstractContextManager], path: Path,
                  seed: int = 0) -> Path:
    """Generate images for ``batch``'s class maps and save the :func:`preview_grid` as PNG.

    Args:
        generator: the generator to show (the EMA one).
        batch: a :func:`fixed_batch`.
        palette: ``(K, 3)`` uint8 class colours.
        device: the generator's device.
        autocast: returns the precision context of the forward pass.
        path: the PNG file.
        seed: seed of the generator's random inputs (:func:`random_inputs`): the same at
            every step.

    Returns:
        ``path``.
    """
    masks = batch["mask"]
    inputs = random_inputs(generator, len(masks), torch.Generator().manual_seed(seed), device)
    with autocast():
        fake = generator(masks.to(device), **inputs).float().cpu()
    return save_png(preview_grid(batch["mask"], batch["image"], fake, palette,
                                 rgb=batch.get("rgb")), path)


def save_validation_figure(summary: dict[str, Any], palette: np.ndarray, path: Path) -> Path:
    """A bar chart of a validation summary's per-class spectral distances, as PNG.

    Args:
        summary: :func:`geospade.training.metrics.validation_summary`'s result.
        palette: ``(K, 3)`` uint8 class colours (the bars' colours).
        path: the PNG file.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, d in zip(summary["classes"], summary["spectral_distance"], strict=True)
             if d is not None]
    values = [d for d in summary["spectral_distance"] if d is not None]
    colours = [palette[summary["classes"].index(n)] / 255.0 for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2), dpi=100)
    try:
        ax.barh(names, values, color=colours, edgecolor="black")
        ax.invert_yaxis()
        ax.set_xlabel("spectral distance (1-D Wasserstein, normalised units; lower is better)")
        ax.set_title(f"validation, step {summary['step']}")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
