"""Vector files given by the user (a tiling AOI, synthesis edits), read once, one way.

Every vector input goes through :func:`read_vector`, so a missing, unreadable or unplaceable
file fails with the same one-line wording whatever it is for. Reading is geopandas over OGR
(pyogrio): any format OGR reads (GeoPackage, GeoJSON, shapefile, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geospade.errors import GeospadeError
from geospade.outputs import is_local
from geospade.raster.sources import gdal_path

if TYPE_CHECKING:
    import geopandas


def read_vector(path: str | Path, role: str, crs: Any = None, *,
                onto: str | None = None) -> geopandas.GeoDataFrame:
    """Read a vector file; its null and empty geometries are left out.

    Args:
        path: any file OGR reads; a URL (``https://…``, ``s3://…``) or GDAL path
            (``/vsizip/…``) is read through GDAL's virtual file systems.
        role: what the file is to the caller ("AOI", "edits"), the word errors start with.
        crs: the CRS to reproject the features to (anything ``GeoDataFrame.to_crs`` takes);
            None keeps the file's.
        onto: what the features are to be placed on ("the land cover"), whose CRS is ``crs``.
            The file must then have a CRS, and so must ``crs``: None means that raster has
            none. Without ``onto``, a file needs a CRS only when ``crs`` is given.

    Returns:
        The features, in ``crs`` when one is given.

    Raises:
        GeospadeError: the file is missing or unreadable, or has no CRS where one is needed.
    """
    import geopandas as gpd
    import shapely

    if is_local(path):
        path = Path(path)
        if not path.exists():
            raise GeospadeError(f"{role} file not found: {path}")
    else:  # a URL or GDAL path, as given: a Path would fold "https://" into "https:/"
        path = gdal_path(path)
    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - pyogrio/fiona raise their own error types
        # OGR's messages span lines; the error keeps to one.
        raise GeospadeError(f"cannot read {role} {path}: {' '.join(str(exc).split())}") from None
    needs_crs = onto is not None or crs is not None
    if needs_crs and frame.crs is None:
        raise GeospadeError(f"{role} {path} has no CRS; set one (e.g. ogr2ogr -a_srs) so it can "
                            f"be placed on {onto or 'the raster'}")
    if onto is not None and crs is None:
        raise GeospadeError(f"{onto} has no CRS, so {role} {path} cannot be placed on it")
    # shapely's tests, not GeoSeries.notna(), which warns on every file with an empty geometry.
    geometries = np.asarray(frame.geometry, dtype=object)
    frame = frame[~(shapely.is_missing(geometries) | shapely.is_empty(geometries))]
    if crs is not None:
        # A rasterio CRS goes as WKT, the form pyproj reads without guessing.
        frame = frame.to_crs(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    return frame
