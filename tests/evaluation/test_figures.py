"""Pictures a person can read: small chips enlarged pixel by pixel, drawn with the RGB bands."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from geospade.data.chips import ChipDataset
from geospade.evaluation.figure import report_rgb, write_figure
from geospade.training.preview import (
    fixed_batch,
    preview_grid,
    to_rgb,
    upscale_nearest,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def test_upscale_nearest_repeats_pixels_by_a_whole_factor():
    image = np.arange(64 * 48 * 3, dtype=np.int32).reshape(48, 64, 3)
    big = upscale_nearest(image)
    assert big.shape == (288, 384, 3)  # factor 6: the smaller side reaches 256
    np.testing.assert_array_equal(big[::6, ::6], image)
    np.testing.assert_array_equal(big[5::6, 5::6], image)
    assert set(np.unique(big)) == set(np.unique(image))  # no new values
    assert upscale_nearest(np.zeros((300, 256))) .shape == (300, 256)  # big enough already
    assert upscale_nearest(np.zeros((64, 64)), min_size=100).shape == (128, 128)


def test_to_rgb_draws_the_bands_it_is_told():
    image = np.stack([np.full((4, 4), v, np.float32) for v in (-1.0, 0.0, 1.0, 0.5)])
    assert tuple(to_rgb(image)[0, 0]) == (0, 128, 255)  # bands 1-3
    assert tuple(to_rgb(image, (3, 2, 1))[0, 0]) == (191, 255, 128)
    assert tuple(to_rgb(torch.from_numpy(image), (1, 1, 1))[0, 0]) == (128, 128, 128)


def test_preview_grid_shows_64_px_chips_at_256_px():
    n, size, gap = 2, 64, 2
    masks = torch.zeros((n, size, size), dtype=torch.long)
    reals = torch.full((n, 4, size, size), -1.0)
    reals[:, 3] = 1.0  # only band 4 is bright: drawn red when it is the red band
    palette = np.array([[10, 20, 30]], dtype=np.uint8)
    grid = preview_grid(masks, reals, reals, palette, gap=gap, rgb=(3, 1, 2))
    tile = 256
    assert grid.shape == (n * tile + (n + 1) * gap, 3 * tile + 4 * gap, 3)
    real = grid[gap:gap + tile, 2 * gap + tile:2 * gap + 2 * tile]
    assert (real == np.array(RED, np.uint8)).all()
    assert (grid[gap:gap + tile, gap:gap + tile] == palette[0]).all()
    # Chips of 256 px and more are drawn as they are (same previews as before).
    big = preview_grid(torch.zeros((1, 256, 256), dtype=torch.long),
                       torch.zeros((1, 3, 256, 256)), torch.zeros((1, 3, 256, 256)), palette)
    assert big.shape == (256 + 2 * gap, 3 * 256 + 4 * gap, 3)


def test_fixed_batch_carries_the_stores_rgb(tmp_path, chip_store):
    copy = tmp_path / "chips"
    shutil.copytree(chip_store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["rgb"] = [2, 1, 0]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    batch = fixed_batch(ChipDataset(copy, split="all"), 2)
    assert batch["rgb"] == (2, 1, 0) and batch["image"].shape == (2, 4, 64, 64)


def _report(samples: int, size: int) -> dict:
    """A minimal report whose sample chips are a red/blue checkerboard when drawn with bands
    (1, 2, 3) (named red, green, blue), and grey with any other choice."""
    yy, xx = np.mgrid[:size, :size]
    odd = ((yy + xx) % 2).astype(np.float32)
    image = np.stack([np.zeros_like(odd), 1 - 2 * odd, -np.ones_like(odd), 2 * odd - 1])
    return {
        "chips": "/nonexistent/chips", "classes": ["a", "b"], "colors": ["#00ff00", "#ffff00"],
        "bands": ["nir", "red", "green", "blue"], "class_pixels": [1, 1],
        "methods": {"model": {"wasserstein": {"per_class_mean": [0.1, 0.2]},
                              "texture": {"per_class_ratio": [1.0, 0.9]}}},
        "_samples": {"mask": [np.zeros((size, size), np.uint8)] * samples,
                     "real": [image] * samples, "model": [image] * samples,
                     "ids": [f"chip{i}" for i in range(samples)]},
    }


def test_report_rgb_prefers_the_report_then_the_band_names():
    report = _report(1, 8)
    assert report_rgb(report) == (1, 2, 3)  # by name: the store is gone
    assert report_rgb({**report, "rgb": [3, 2, 1]}) == (3, 2, 1)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_figure_shows_64_px_chips_large_in_their_rgb_bands(tmp_path):
    path = write_figure(_report(2, 64), tmp_path / "figure.png")
    pixels = np.asarray(Image.open(path).convert("RGB"))
    red = (pixels == np.array(RED, np.uint8)).all(axis=2)
    blue = (pixels == np.array(BLUE, np.uint8)).all(axis=2)
    assert red.any() and blue.any()  # drawn with bands 2, 3, 4 as red, green, blue
    # The checkerboard of the first real panel: each chip pixel a block of several screen
    # pixels, the panel at least 256 screen pixels wide.
    rows, cols = np.nonzero(red | blue)
    first_row = rows.min()
    panel = cols[(rows >= first_row) & (rows < first_row + 100)]
    real_panel = panel[panel < panel.min() + 400]
    assert real_panel.max() - real_panel.min() + 1 >= 256
    run = np.diff(np.flatnonzero(np.diff(red[first_row + 10, real_panel.min():
                                             real_panel.min() + 256].astype(int))))
    assert run.min() >= 4  # nearest neighbour: no blur, no mixed colours
