"""Aligning imagery with a land-cover grid.

The land cover's grid (CRS, transform, width, height) is the reference (docs/design.md, "Tile
I/O").
Imagery on the same grid, or on a grid shifted by whole pixels, is read with plain windows;
imagery in another CRS, resolution or sub-pixel offset is warped onto the label grid with a
:class:`rasterio.vrt.WarpedVRT` (bilinear or cubic; labels are never resampled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geospade.errors import GeospadeError

if TYPE_CHECKING:
    from geospade.raster.grid import Grid
    from geospade.raster.sources import GridLike

RESAMPLING = {"bilinear": Resampling.bilinear, "cubic": Resampling.cubic}
#: The role of the land cover in :func:`open_raster` (read by value: gaps get nodata).
LAND_COVER = "land cover"


def same_crs(a: CRS | None, b: CRS | None) -> bool:
    """True when two CRS definitions describe the same system (names and axis order aside)."""
    if a is None or b is None:
        return a is None and b is None
    if a == b:
        return True
    from pyproj import CRS as ProjCRS

    try:
        pa, pb = ProjCRS.from_wkt(a.to_wkt()), ProjCRS.from_wkt(b.to_wkt())
        return pa.equals(pb, ignore_axis_order=True)
    except Exception:  # noqa: BLE001 - an unparsable definition is simply not equal
        return False


def open_raster(path: str | Path, role: str, *, onto: GridLike | None = None,
                resampling: str = "bilinear") -> rasterio.io.DatasetReader:
    """Open a raster input for reading, turning a missing or unreadable file into a one-line
    error.

    The input may be several files read as one mosaic: a glob, a list file, and any path may
    be a URL or GDAL path (:mod:`geospade.raster.sources`). The land cover's mosaic marks the
    pixels between its files with a nodata value (it is read by value), other inputs with the
    dataset mask where their files have no nodata value.

    Args:
        path: the file, or the spec of several.
        role: what it is for the user ("land cover", "imagery"), used in messages.
        onto: for imagery in files of several grids, the land cover's grid: they are warped
            onto it with ``resampling``; without it, files must share one grid.
        resampling: ``bilinear`` or ``cubic``.
    """
    from geospade.raster.sources import GapFill, open_input

    gaps = GapFill.NODATA if role == LAND_COVER else GapFill.MASK
    return open_input(path, role, onto=onto, resampling=resampling, gaps=gaps)


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= 1e-9 * max(scale, 1.0)


@dataclass(frozen=True)
class Alignment:
    """How the imagery maps onto the label grid.

    Attributes:
        window: the overlap, as a window of the label grid (only it is tiled).
        offset: ``(row, col)`` of the label grid's origin in the imagery's pixel grid when the
            imagery is on the same grid up to whole pixels, else ``None`` (then it is warped).
    """

    window: Window
    offset: tuple[int, int] | None

    @property
    def warped(self) -> bool:
        return self.offset is None


def align(labels: rasterio.io.DatasetReader, imagery: rasterio.io.DatasetReader) -> Alignment:
    """Find the overlap of the imagery with the label grid and whether it must be warped.

    Two rasters without a CRS (an ML dataset's image/label pair, PNG or TIFF) are pixel-aligned
    when they have the same size in pixels: pixel (row, col) of one is pixel (row, col) of the
    other, whatever transform either carries.

    Raises:
        GeospadeError: only one raster has a CRS, two without one differ in size, or the two do
            not overlap.
    """
    if labels.crs is None or imagery.crs is None:
        return _pixel_alignment(labels, imagery)
    lt, it = labels.transform, imagery.transform
    offset = None
    if same_crs(labels.crs, imagery.crs) and lt.is_rectilinear and it.is_rectilinear:
        res = max(abs(lt.a), abs(lt.e))
        if _close(lt.a, it.a, res) and _close(lt.e, it.e, res):
            col, row = ~it * (lt.c, lt.f)
            if abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6:
                offset = (int(round(row)), int(round(col)))
    if offset is not None:
        row, col = offset
        r0, c0 = max(0, -row), max(0, -col)
        r1, c1 = min(labels.height, imagery.height - row), min(labels.width, imagery.width - col)
    else:
        left, bottom, right, top = transform_bounds(
            imagery.crs, labels.crs, *imagery.bounds, densify_pts=21
        )
        corners = [~lt * (x, y) for x in (left, right) for y in (bottom, top)]
        cols = [c for c, _ in corners]
        rows = [r for _, r in corners]
        c0 = max(0, math.ceil(min(cols) - 1e-6))
        r0 = max(0, math.ceil(min(rows) - 1e-6))
        c1 = min(labels.width, math.floor(max(cols) + 1e-6))
        r1 = min(labels.height, math.floor(max(rows) + 1e-6))
    if r1 <= r0 or c1 <= c0:
        raise GeospadeError(
            f"imagery {Path(imagery.name).name} does not overlap "
            f"land cover {Path(labels.name).name}"
        )
    return Alignment(Window(c0, r0, c1 - c0, r1 - r0), offset)


def _pixel_alignment(labels: rasterio.io.DatasetReader,
                     imagery: rasterio.io.DatasetReader) -> Alignment:
    """The alignment of two rasters of which at least one has no CRS (see :func:`align`)."""
    lab, img = Path(labels.name).name, Path(imagery.name).name
    if labels.crs is not None or imagery.crs is not None:
        missing, other = (f"imagery {img}", "land cover") if labels.crs else (
            f"land cover {lab}", "imagery")
        raise GeospadeError(f"{missing} has no CRS but the {other} has one: give both a CRS, or "
                            "neither (a pixel-aligned pair)")
    if (labels.width, labels.height) != (imagery.width, imagery.height):
        raise GeospadeError(
            f"land cover {lab} ({labels.width} x {labels.height} px) and imagery {img} "
            f"({imagery.width} x {imagery.height} px) have no CRS, so they must be the same "
            "size to be pixel-aligned"
        )
    return Alignment(Window(0, 0, labels.width, labels.height), (0, 0))


def warped_imagery(
    imagery: rasterio.io.DatasetReader, labels_grid: Grid, resampling: str
) -> tuple[WarpedVRT, int]:
    """A virtual copy of ``imagery`` on the label grid, with an alpha band marking valid pixels.

    Args:
        imagery: the open imagery dataset.
        labels_grid: the land cover's grid.
        resampling: ``bilinear`` or ``cubic``.

    Returns:
        The virtual dataset and the index of its alpha band: the source's own alpha band if it
        has one (GDAL then warps it as alpha, as GDAL tools would), else an added last band.
    """
    alpha = [b for b, ci in zip(imagery.indexes, imagery.colorinterp, strict=True)
             if ci == ColorInterp.alpha]
    vrt = WarpedVRT(
        imagery,
        crs=labels_grid.crs,
        transform=labels_grid.transform,
        width=labels_grid.width,
        height=labels_grid.height,
        resampling=RESAMPLING[resampling],
        add_alpha=not alpha,
    )
    return vrt, alpha[0] if alpha else imagery.count + 1


def imagery_valid(image: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where a pixel of ``image`` ``(C, H, W)`` holds data (not all bands equal nodata)."""
    if nodata is None:
        return np.ones(image.shape[1:], dtype=bool)
    if isinstance(nodata, float) and math.isnan(nodata):
        return ~np.isnan(image).all(axis=0)
    return ~(image == np.asarray(nodata, dtype=image.dtype)).all(axis=0)
