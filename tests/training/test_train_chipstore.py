"""A small chip store written by the tests themselves, in the format of docs/design.md.

Imported by the dataset and training tests (tiny chips, fast); the real store made by
``geospade tile`` is covered by the ``chip_store`` fixture where it is used.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from geospade.normalization import BandStats
from geospade.schemes import load_scheme

# Class colours the synthetic imagery is painted with (R, G, B, NIR), one row per class index.
CLASS_SPECTRA = np.array(
    [
        [30, 50, 80, 10],
        [40, 90, 30, 160],
        [110, 150, 70, 130],
        [190, 150, 110, 140],
        [160, 155, 160, 90],
        [70, 70, 80, 60],
    ],
    dtype=np.float32,
)


def synthetic_mask(rng: np.random.Generator, size: int, num_classes: int) -> np.ndarray:
    """A class map of a few axis-aligned blocks (coherent regions, not per-pixel noise)."""
    mask = np.full((size, size), rng.integers(num_classes), dtype=np.uint8)
    for _ in range(4):
        r0, c0 = rng.integers(0, size - 4, size=2)
        h, w = rng.integers(4, size // 2 + 1, size=2)
        mask[r0 : r0 + h, c0 : c0 + w] = rng.integers(num_classes)
    return mask


def make_chip_store(
    root: Path,
    n_train: int = 8,
    n_val: int = 2,
    size: int = 32,
    bands: int = 4,
    num_classes: int = 6,
    seed: int = 0,
    ignore_corner: bool = True,
    dtype: str = "uint8",
) -> Path:
    """Write a chip store whose images are class colours plus a little noise."""
    scheme = load_scheme("chesapeake7")
    num_classes = min(num_classes, scheme.num_classes)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rows = []
    scale = 1.0 if dtype == "uint8" else 40.0
    for i in range(n_train + n_val):
        cid = f"r{i:03d}"
        split = "train" if i < n_train else "val"
        mask = synthetic_mask(rng, size, num_classes)
        spectra = CLASS_SPECTRA[:, np.arange(bands) % 4] * scale
        image = spectra[mask].transpose(2, 0, 1) + rng.normal(0, 4 * scale, (bands, size, size))
        if ignore_corner and i % 3 == 0:
            mask[:3, :3] = 255
        image = np.clip(image, 0, 255 * scale).round().astype(dtype)
        transform = from_origin(1000.0 + 40 * i, 5000.0, 1.0, 1.0)
        profile = dict(
            driver="GTiff", width=size, height=size, crs="EPSG:26918", transform=transform
        )
        with rasterio.open(
            root / "masks" / f"{cid}.tif", "w", count=1, dtype="uint8", **profile
        ) as dst:
            dst.write(mask, 1)
        with rasterio.open(
            root / "images" / f"{cid}.tif", "w", count=bands, dtype=dtype, **profile
        ) as dst:
            dst.write(image)
        rows.append(
            {
                "id": cid,
                "split": split,
                "row_off": 0,
                "col_off": 40 * i,
                "width": size,
                "height": size,
                "nodata_fraction": float((mask == 255).mean()),
                "image": f"images/{cid}.tif",
                "mask": f"masks/{cid}.tif",
                "geometry": box(1000.0 + 40 * i, 5000.0 - size, 1000.0 + 40 * i + size, 5000.0),
            }
        )
    gpd.GeoDataFrame(rows, crs="EPSG:26918").to_file(
        root / "index.gpkg", layer="chips", driver="GPKG"
    )
    names = ["red", "green", "blue", "nir"]
    high = 255.0 * scale
    band_stats = [
        BandStats(names[b % 4] + ("" if b < 4 else str(b)), dtype, 0.0, high).to_dict()
        for b in range(bands)
    ]
    manifest = {
        "format": "geospade-chips",
        "format_version": 1,
        "geospade_version": "test",
        "scheme": scheme.to_dict(),
        "ignore_index": 255,
        "chip_size": size,
        "stride": size,
        "bands": band_stats,
        "counts": {"train": n_train, "val": n_val},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root
