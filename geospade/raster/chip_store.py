"""Writing the chip store of DESIGN.md: image and mask chips, ``index.gpkg``, ``manifest.json``.

Layout (format version 1, see ``docs/design.md``)::

    OUT/images/<id>.tif   imagery chip, source dtype and band descriptions, CRS + window transform
    OUT/masks/<id>.tif    uint8 class indices, 255 = ignore, the scheme's colour table
    OUT/index.gpkg        layer "chips", one row per chip
    OUT/manifest.json     written last; a store without it is incomplete
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geospade.schemes import IGNORE_INDEX

FORMAT = "geospade-chips"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX = "index.gpkg"
INDEX_LAYER = "chips"
IMAGES = "images"
MASKS = "masks"

# Chip compression: chips are small and written once per chip, so a cheap codec pays. ZSTD at
# level 1 costs little CPU over no compression and still shrinks land-cover masks a lot
# (see benchmarks/bench_tile.py).
COMPRESSIONS = ("none", "zstd", "lzw", "deflate")


def chip_id(row_off: int, col_off: int) -> str:
    """The chip's id: its row and column offset in the land-cover grid."""
    return f"{row_off:06d}_{col_off:06d}"


def _codec(compress: str) -> dict:
    if compress == "none":
        return {}
    if compress == "zstd":
        return {"compress": "zstd", "zstd_level": 1}
    if compress == "deflate":
        return {"compress": "deflate", "zlevel": 1}
    return {"compress": compress}


def write_image_chip(
    path: Path,
    image: np.ndarray,
    crs: CRS,
    transform: Affine,
    nodata: float | None,
    descriptions: Sequence[str | None],
    compress: str = "zstd",
) -> None:
    """Write an imagery chip ``(C, H, W)`` in its source dtype."""
    count, height, width = image.shape
    profile = dict(
        driver="GTiff", width=width, height=height, count=count, dtype=image.dtype, crs=crs,
        transform=transform, nodata=nodata, interleave="pixel", **_codec(compress),
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
        for b, desc in enumerate(descriptions, start=1):
            if desc:
                dst.set_band_description(b, desc)


def write_mask_chip(
    path: Path,
    mask: np.ndarray,
    crs: CRS,
    transform: Affine,
    colormap: dict[int, tuple[int, int, int, int]],
    compress: str = "zstd",
) -> None:
    """Write a class-index chip (uint8, :data:`IGNORE_INDEX` = nodata) with a colour table."""
    height, width = mask.shape
    profile = dict(
        driver="GTiff", width=width, height=height, count=1, dtype="uint8", crs=crs,
        transform=transform, nodata=IGNORE_INDEX, photometric="palette", **_codec(compress),
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask, 1)
        dst.write_colormap(1, colormap)


def write_index(path: Path, records: list[dict], num_classes: int, crs: CRS) -> None:
    """Write ``index.gpkg`` (layer ``chips``): one row per chip with its footprint polygon.

    Args:
        records: chip records with id, split, row_off, col_off, width, height, nodata_fraction,
            class_fractions (list of K), image, mask and bounds (left, bottom, right, top).
    """
    import geopandas as gpd
    from shapely import box

    columns: dict[str, list] = {
        "id": [r["id"] for r in records],
        "split": [r["split"] for r in records],
        "row_off": [r["row_off"] for r in records],
        "col_off": [r["col_off"] for r in records],
        "width": [r["width"] for r in records],
        "height": [r["height"] for r in records],
        "nodata_fraction": [r["nodata_fraction"] for r in records],
    }
    for i in range(num_classes):
        columns[f"frac_{i}"] = [r["class_fractions"][i] for r in records]
    columns["image"] = [r["image"] for r in records]
    columns["mask"] = [r["mask"] for r in records]
    geometry = [box(*r["bounds"]) for r in records]
    frame = gpd.GeoDataFrame(columns, geometry=geometry, crs=crs.to_wkt())
    frame.to_file(path, layer=INDEX_LAYER, driver="GPKG")


def write_manifest(path: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (the last file of a store) via a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
