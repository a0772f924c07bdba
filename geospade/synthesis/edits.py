"""Vector edits burned into the class map before synthesis, and the (edited) class map output.

``synthesize --edits FILE --edit-field NAME`` reads polygons whose attribute ``NAME`` holds a class
(a raw value or a class name) and burns them into each strip of the land cover after it is mapped
to class indices; later features win where they overlap. ``--save-landcover`` writes the result
back in raw scheme values, with the scheme's colours in the file and its class names (and a
raster attribute table) in GDAL's side-car ``NAME.aux.xml``, where QGIS and ArcGIS read them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.features import rasterize
from rasterio.transform import array_bounds

from geospade.errors import ArgumentError, GeospadeError
from geospade.raster.codecs import LOSSY_CODECS
from geospade.raster.grid import Grid
from geospade.raster.strip_writer import (
    RasterClass,
    StripWriter,
    write_class_aux,
)
from geospade.schemes import ClassScheme
from geospade.vectors import read_vector


@dataclass
class Edits:
    """Vector edits reprojected to the land cover's CRS: geometries and the class index each
    burns (later features win where they overlap)."""

    geometries: Any  # geopandas.GeoSeries
    classes: np.ndarray

    def burn(self, labels: np.ndarray, transform: Affine) -> None:
        """Burn the edits that touch ``labels`` (a class-index array on ``transform``) in place."""
        from shapely.geometry import box

        h, w = labels.shape
        hits = np.sort(self.geometries.sindex.query(box(*array_bounds(h, w, transform))))
        if len(hits):
            shapes = zip(self.geometries.iloc[hits], self.classes[hits].tolist(), strict=True)
            rasterize(shapes, out=labels, transform=transform)

    def cover(self, height: int, width: int, transform: Affine) -> bool:
        """Whether any edit overlaps the ``height`` x ``width`` raster on ``transform`` (more
        than along its border)."""
        from shapely.geometry import Polygon

        footprint = Polygon([transform * xy for xy in
                             ((0, 0), (width, 0), (width, height), (0, height))])
        inside = self.geometries.intersects(footprint) & ~self.geometries.touches(footprint)
        return bool(inside.any())


def load_edits(path: str | Path, field_name: str | None, scheme: ClassScheme, crs: Any) -> Edits:
    """Read a vector layer of edits (any format geopandas reads) for the land cover's CRS.

    Args:
        path: vector file.
        field_name: attribute holding each feature's class: a raw class value or a class name.
        scheme: the checkpoint's class scheme.
        crs: the land cover's CRS.

    Returns:
        The edits, in ``crs``.

    Raises:
        GeospadeError: unreadable file, no CRS, missing field, geometries that are not
            polygons, or values that are no class.
    """
    path = Path(path)
    if not field_name:
        raise ArgumentError("edits", "needs edit_field (the attribute with each polygon's class)",
                            others=("edit_field",))
    gdf = read_vector(path, "edits", crs, onto="the land cover")
    if field_name not in gdf.columns:
        fields = ", ".join(c for c in gdf.columns if c != gdf.geometry.name) or "none"
        raise GeospadeError(f"edits {path} have no field {field_name!r} (fields: {fields})")
    others = sorted(set(gdf.geom_type) - {"Polygon", "MultiPolygon"})
    if others:
        raise GeospadeError(f"edits {path} have {', '.join(others)} geometries; only polygons "
                            "(Polygon, MultiPolygon) can be burned into the class map")
    classes = [scheme.index_of(_class_value(i, value, field_name))
               for i, value in zip(gdf.index, gdf[field_name], strict=True)]
    return Edits(gdf.geometry.reset_index(drop=True), np.array(classes, dtype=np.uint8))


def _class_value(feature: Any, value: Any, field_name: str) -> Any:
    """A feature's class attribute as :meth:`ClassScheme.index_of` takes it: whole numbers
    (read as floats from many formats) as ``int``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise GeospadeError(f"edits feature {feature} has no value in field {field_name!r}")
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if isinstance(value, (np.integer,)):
        value = int(value)
    return value


def class_raster_values(scheme: ClassScheme, src_dtype: str, src_nodata: float | None
                        ) -> tuple[np.ndarray, str, float]:
    """How to write a class map in raw scheme values.

    Args:
        scheme: the checkpoint's class scheme.
        src_dtype, src_nodata: the land cover's dtype and nodata, kept where they fit.

    Returns:
        ``(lut, dtype, nodata)``: a lookup table class index -> raw value (256 entries, nodata
        beyond the classes), the dtype that holds every value, and the nodata value.
    """
    if src_nodata is not None and float(src_nodata).is_integer():
        nodata = int(src_nodata)
    elif scheme.nodata:
        nodata = int(scheme.nodata[0])
    else:
        nodata = next(v for v in (0, 255, 65535) if v not in scheme.values)
    top = max([*scheme.values, nodata])
    low = min([*scheme.values, nodata])
    dtype = np.dtype(src_dtype)
    if (not np.issubdtype(dtype, np.integer) or top > np.iinfo(dtype).max
            or low < np.iinfo(dtype).min):
        dtype = np.dtype("uint8" if low >= 0 and top < 256 else
                         "uint16" if low >= 0 and top < 65536 else "int32")
    lut = np.full(256, nodata, dtype=dtype)
    lut[:scheme.num_classes] = scheme.values
    return lut, dtype.name, nodata


def raster_classes(scheme: ClassScheme) -> list[RasterClass]:
    """The scheme's classes as a class map in raw values shows them: value, name, colour."""
    return [RasterClass(int(c.value), c.name, (*c.color, 255)) for c in scheme.classes]


class ClassMapWriter:
    """Writes class-index rows, top to bottom, as a class map in raw scheme values.

    The file has the scheme's colour table (8 and 16-bit maps); :meth:`close` also writes the
    class names and a raster attribute table to its ``.aux.xml``.

    Args:
        path: output GeoTIFF.
        grid: its grid (the synthesized area).
        scheme: the checkpoint's class scheme (values, names and colours).
        src_dtype, src_nodata: the land cover's dtype and nodata (:func:`class_raster_values`).
        **kwargs: passed to :class:`~geospade.raster.strip_writer.StripWriter` (cog, overwrite,
            block_size, compress, tags); a lossy codec is taken as deflate (classes are not
            pixels to blur).
    """

    def __init__(self, path: str | Path, grid: Grid, scheme: ClassScheme, src_dtype: str,
                 src_nodata: float | None, **kwargs: Any) -> None:
        self._lut, dtype, nodata = class_raster_values(scheme, src_dtype, src_nodata)
        self._classes = raster_classes(scheme)
        colormap = None
        if dtype in ("uint8", "uint16"):
            colormap = {c.value: c.color for c in self._classes}
            colormap[int(nodata)] = (0, 0, 0, 0)
        if kwargs.get("compress") in LOSSY_CODECS:
            kwargs["compress"] = "deflate"
        self._out = StripWriter(path, grid, 1, dtype, nodata=nodata,
                                descriptions=["land cover (edited)"], colormap=colormap,
                                resampling="nearest", **kwargs)

    def write(self, labels: np.ndarray) -> None:
        """Append class-index rows ``(n, width)`` below those written so far."""
        self._out.write(self._lut[labels][None])

    def close(self) -> Path:
        """Finish the file, move it to its final name and name its classes; returns the
        path."""
        path = self._out.close()
        write_class_aux(path, self._classes)
        return path

    def abort(self) -> None:
        """Delete the temporary file."""
        self._out.abort()
