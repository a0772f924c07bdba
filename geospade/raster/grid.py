"""Where a raster lies: its CRS, affine transform and size."""

from __future__ import annotations

from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS


@dataclass(frozen=True)
class Grid:
    """Where a raster lies: CRS, affine transform and size in pixels."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int


def is_rotated(transform: Affine) -> bool:
    """Whether a raster's affine transform is rotated or sheared (not north-up)."""
    return transform.b != 0 or transform.d != 0
