"""`geospade tile`: chips equal the source windows, alignment, split, store contents, bad input."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geospade.normalization import BandStats
from geospade.schemes import CHESAPEAKE7, IGNORE_INDEX


def test_chip_pixels_and_transform_equal_the_source_window(chip_store, landscape_pair):
    landcover, imagery = landscape_pair
    index = gpd.read_file(chip_store / "index.gpkg", layer="chips")
    assert len(index) == 16
    with rasterio.open(landcover) as lab, rasterio.open(imagery) as img:
        for row in index.itertuples():
            window = Window(row.col_off, row.row_off, row.width, row.height)
            with rasterio.open(chip_store / row.image) as chip:
                assert chip.transform == img.window_transform(window)
                assert chip.crs == img.crs
                np.testing.assert_array_equal(chip.read(), img.read(window=window))
                assert chip.descriptions == img.descriptions
            with rasterio.open(chip_store / row.mask) as mask:
                assert mask.transform == lab.window_transform(window)
                assert mask.dtypes[0] == "uint8"
                expected = CHESAPEAKE7.encode(lab.read(1, window=window), lab.nodata)
                np.testing.assert_array_equal(mask.read(1), expected)
                assert mask.colormap(1)[0][:3] == CHESAPEAKE7.classes[0].color


def test_manifest_lists_counts_bands_and_sources(chip_store, landscape_pair):
    manifest = json.loads((chip_store / "manifest.json").read_text())
    assert manifest["format"] == "geospade-chips" and manifest["format_version"] == 1
    assert manifest["counts"] == {"train": 12, "val": 4, "test": 0}
    assert manifest["chip_size"] == 64 and manifest["stride"] == 64
    assert manifest["ignore_index"] == IGNORE_INDEX
    bands = [BandStats.from_dict(b) for b in manifest["bands"]]
    assert [b.name for b in bands] == ["red", "green", "blue", "nir"]
    assert all((b.low, b.high, b.dtype) == (0.0, 255.0, "uint8") for b in bands)
    with rasterio.open(landscape_pair[0]) as lab:
        counts = np.bincount(CHESAPEAKE7.encode(lab.read(1), lab.nodata).ravel(), minlength=256)
        assert manifest["sources"]["landcover"]["transform"] == list(lab.transform)[:6]
    pixels = np.sum([manifest["class_pixels"][s] for s in ("train", "val", "test")], axis=0)
    np.testing.assert_array_equal(pixels, counts[: CHESAPEAKE7.num_classes])
