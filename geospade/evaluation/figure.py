"""The report's PNG figure: per-class bars of each method, and mask | real | generated samples.

Samples are drawn with the chip store's RGB bands
(:attr:`~geospade.formats.chip_store.ChipStore.rgb`) and enlarged pixel by pixel to at least
256 px, so that a 64-px chip can be seen (docs/design.md, "Evaluation report").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geospade.atomic import atomic_path
from geospade.evaluation.summary import METHOD_LABELS, METHODS
from geospade.training.preview import upscale_nearest

SAMPLE_DPI = 100
SAMPLE_ROW_INCHES = 3.4
"""Each sample row is 340 px high: its panels show the enlarged chips at about 290 px."""


def report_rgb(report: dict[str, Any]) -> tuple[int, int, int]:
    """The bands the samples are drawn with: the report's ``rgb``, else the chip store's
    (:attr:`~geospade.formats.chip_store.ChipStore.rgb`), else chosen from the band names."""
    rgb = report.get("rgb")
    if isinstance(rgb, (list, tuple)) and len(rgb) == 3:
        return tuple(int(i) for i in rgb)
    from geospade.errors import GeospadeError
    from geospade.formats.chip_store import open_chip_store

    chips = report.get("chips")
    if chips:
        try:
            store = open_chip_store(chips)
            if store.rgb is not None and [b.name for b in store.bands] == report["bands"]:
                return store.rgb
        except GeospadeError:
            pass  # the store moved since: the band names decide
    from geospade.raster.bands import rgb_bands

    return rgb_bands(report["bands"], []).indices


def _display(image: np.ndarray, rgb: Sequence[int]) -> np.ndarray:
    """A normalised image ``(C, H, W)`` as an RGB array in 0..1 for plotting, enlarged."""
    img = image[list(rgb)]
    return upscale_nearest(np.clip((np.moveaxis(img, 0, -1) + 1.0) / 2.0, 0.0, 1.0))


def _class_bars(fig, grid, report: dict[str, Any]) -> None:
    """The first row: per-class W1 and texture ratio, one bar per method."""
    methods = [m for m in METHODS if m in report["methods"]]
    present = [i for i, px in enumerate(report["class_pixels"]) if px]
    names = [report["classes"][i] for i in present]
    x = np.arange(len(present))
    width = 0.8 / max(len(methods), 1)
    for col, (key, sub, title) in enumerate([
        ("wasserstein", "per_class_mean", "spectral W1 (normalised, lower is better)"),
        ("texture", "per_class_ratio", "texture ratio (1 = real)"),
    ]):
        ax = fig.add_subplot(grid[0, col * 3 : col * 3 + 3])
        for j, m in enumerate(methods):
            vals = [report["methods"][m][key][sub][i] for i in present]
            vals = [np.nan if v is None else v for v in vals]
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, vals, width, label=METHOD_LABELS[m])
        if key == "texture":
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)


def _sample_rows(fig, grid, report: dict[str, Any], samples: dict[str, list]) -> None:
    """One row per sample chip: its mask in the scheme's colours, the real and generated image."""
    palette = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in report["colors"]])
    table = np.full((256, 3), 255, dtype=np.uint8)  # ignore/nodata shows white
    table[: len(palette)] = palette
    rgb = report_rgb(report)
    for r, mask in enumerate(samples["mask"]):
        panels = [("mask", upscale_nearest(table[mask])),
                  ("real", _display(samples["real"][r], rgb)),
                  ("generated", _display(samples["model"][r], rgb))]
        for col, (title, img) in enumerate(panels):
            ax = fig.add_subplot(grid[r + 1, col * 2 : col * 2 + 2])
            ax.imshow(img, interpolation="nearest")
            ax.set_title(f"{title} ({samples['ids'][r]})" if col == 0 else title, fontsize=8)
            ax.axis("off")


def write_figure(report: dict[str, Any], path: str | Path) -> Path:
    """A PNG: per-class W1 and texture bars for each method, and mask | real | generated samples.

    Args:
        report: an evaluation report; its ``_samples`` (left out of ``report.json``) give the
            sample rows.
        path: the PNG to write (atomically; its folder is created).

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    samples = report.get("_samples") or {"mask": []}
    nrows = 1 + len(samples["mask"])
    fig = plt.figure(figsize=(12, 3.6 + SAMPLE_ROW_INCHES * len(samples["mask"])))
    grid = fig.add_gridspec(nrows, 6, height_ratios=[1.2] + [1.0] * (nrows - 1))
    try:
        _class_bars(fig, grid, report)
        _sample_rows(fig, grid, report, samples)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=SAMPLE_DPI, format="png")
    finally:
        plt.close(fig)
    return path
