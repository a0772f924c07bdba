"""GDAL settings geospade runs its raster I/O under.

GDAL's default block cache is 5 % of RAM. Reading or writing a raster strip by strip touches
each block once, so a large cache only holds blocks that are never read again: while overviews
are built or a COG is copied, peak memory would grow with the raster's size up to that limit. A
small cache keeps memory flat and costs no measurable time for strip-ordered I/O.
"""

from __future__ import annotations

from typing import Any

import rasterio

GDAL_CACHE_MB = 64
"""GDAL block cache (MB) per process while geospade reads or writes rasters."""


def limited_cache(**options: Any) -> rasterio.Env:
    """A ``rasterio.Env`` with GDAL's block cache limited to :data:`GDAL_CACHE_MB`.

    Args:
        **options: further GDAL configuration options (e.g. ``GDAL_NUM_THREADS="ALL_CPUS"``).

    Returns:
        The environment, to be used as a context manager.
    """
    # GDAL reads a GDAL_CACHEMAX below 100000 as megabytes.
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, **options)
