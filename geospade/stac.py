"""STAC descriptions of what geospade writes: an Item beside a raster, a Collection for a store.

``synthesize --stac`` and ``stitch --stac`` write a STAC Item (``OUT.json`` beside ``OUT.tif``,
the item's id being the raster's name without its suffix, as STAC's best practices name item
files): the footprint and bounding box in WGS84, the ``proj`` extension (EPSG code or WKT2,
shape, transform, native bounds), the ``raster`` extension on the asset (per band: data type,
nodata, approximate statistics from a read of at most 1024 px a side, which GDAL takes from
the overviews, resolution) and the provenance tags of
:mod:`geospade.provenance` as ``geospade:*`` properties, for a STAC catalogue or pystac.

A chip store gets one Collection (:func:`write_store_collection`), not one Item per chip: its
``index.gpkg`` already lists every chip with its footprint, split and class fractions, and one
more small file per chip would double the per-file cost that dominates tiling. The Collection
gives the store's extent, classes (``classification`` extension) and bands, with the index and
the manifest as assets.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from geospade.atomic import atomic_path
from geospade.errors import GeospadeError
from geospade.outputs import Inputs, OutputKind, prepare_output
from geospade.provenance import PREFIX, read_tags

STATISTICS_PIXELS = 1024
"""Statistics are computed on a read of at most this many pixels along the longer side (GDAL
reads it from the overviews): approximate, and cheap at any raster size."""

COLLECTION_NAME = "collection.json"
"""The Collection file inside a chip store."""


def _is_stac(path: Path, kind: str) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("type") == kind and "stac_version" in data


STAC_ITEM = OutputKind("STAC Item", lambda p: p.is_file() and _is_stac(p, "Feature"))
"""What ``--stac`` writes (``--overwrite`` replaces only a STAC Item)."""

STAC_COLLECTION = OutputKind("STAC Collection",
                             lambda p: p.is_file() and _is_stac(p, "Collection"))


def item_path(raster: str | Path) -> Path:
    """Where the STAC Item of ``raster`` goes: beside it, ``.json`` for its suffix."""
    return Path(raster).with_suffix(".json")


def prepare_item(raster: str | Path, overwrite: bool, inputs: Inputs = ()) -> Path:
    """Check, before any work, that the Item of ``raster`` may be written (never an input; an
    existing file only with ``overwrite`` and only when it is a STAC Item).

    Returns:
        The Item's path.
    """
    return prepare_output(item_path(raster), overwrite, inputs, kind=STAC_ITEM)


def write_item(raster: str | Path, path: str | Path | None = None,
               created: _dt.datetime | None = None) -> Path:
    """Write the STAC Item of ``raster`` (whole or not at all).

    Args:
        raster: a georeferenced raster (geospade's output).
        path: the Item file (default :func:`item_path`); the asset's href is relative to it.
        created: the Item's ``datetime`` and ``created`` (default: now, UTC). Synthetic
            imagery has no acquisition time: its time is when it was made.

    Returns:
        The Item's path.
    """
    path = Path(path) if path is not None else item_path(raster)
    item = raster_item(raster, path, created)
    text = json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False), indent=2)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path


def raster_item(raster: str | Path, path: str | Path | None = None,
                created: _dt.datetime | None = None) -> Any:
    """The ``pystac.Item`` of ``raster`` (see :func:`write_item`)."""
    import pystac
    import rasterio
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension

    raster = Path(raster)
    path = Path(path) if path is not None else item_path(raster)
    created = created or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    with rasterio.open(raster) as src:
        geometry, bbox = _footprint(src.crs, src.transform, src.width, src.height)
        properties = {"created": pystac.utils.datetime_to_str(created),
                      **provenance_properties(src.tags())}
        item = pystac.Item(raster.stem, geometry, bbox, created, properties)
        media = (pystac.MediaType.COG
                 if src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
                 else pystac.MediaType.GEOTIFF)
        asset = pystac.Asset(_relative_href(raster, path), media_type=media, roles=["data"],
                             title=raster.name)
        item.add_asset("data", asset)
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        epsg = src.crs.to_epsg() if src.crs is not None else None
        if epsg is not None:
            proj.epsg = epsg
        else:
            proj.epsg = None
            proj.wkt2 = src.crs.to_wkt() if src.crs is not None else None
        proj.shape = [src.height, src.width]
        proj.transform = [float(v) for v in list(src.transform)[:6]]
        proj.bbox = [float(v) for v in src.bounds]
        RasterExtension.ext(asset, add_if_missing=True).bands = _raster_bands(src)
    return item


def provenance_properties(tags: Mapping[str, str]) -> dict[str, Any]:
    """The provenance tags of a raster as STAC properties: ``GEOSPADE_SEED=3`` ->
    ``"geospade:seed": 3`` (numbers as numbers, ``YES`` as true)."""
    properties: dict[str, Any] = {}
    for key, value in read_tags(tags).items():
        if not key.startswith(PREFIX):
            continue
        name = "geospade:" + key[len(PREFIX):].lower()
        if value.upper() in ("YES", "NO"):
            properties[name] = value.upper() == "YES"
        elif value.lstrip("-").isdigit():
            properties[name] = int(value)
        else:
            properties[name] = value
    return properties


def _relative_href(raster: Path, item: Path) -> str:
    """``raster`` relative to the Item's folder (``./NAME`` beside it)."""
    import os

    rel = os.path.relpath(raster.absolute(), item.absolute().parent)
    return rel if rel.startswith(".") else f"./{rel}"


def _footprint(crs: Any, transform: Any, width: int, height: int
               ) -> tuple[dict[str, Any] | None, list[float] | None]:
    """The raster's outline in WGS84 (GeoJSON polygon) and its bounding box; None without a CRS.

    Each edge is densified (5 points), so a footprint in a projected CRS keeps its curvature.
    """
    if crs is None:
        return None, None
    from rasterio.warp import transform as warp

    t = np.linspace(0.0, 1.0, 6)[:-1]
    cols = np.concatenate([t * width, np.full_like(t, width), (1 - t) * width, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * height, np.full_like(t, height), (1 - t) * height])
    xs, ys = transform * (cols, rows)
    lon, lat = warp(crs, "EPSG:4326", list(xs), list(ys))
    if not all(math.isfinite(v) for v in (*lon, *lat)):
        raise GeospadeError("the raster's footprint cannot be expressed in WGS84 (longitude "
                            "and latitude) for its STAC Item")
    ring = [[float(x), float(y)] for x, y in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    bbox = [min(lon), min(lat), max(lon), max(lat)]
    return {"type": "Polygon", "coordinates": [ring]}, [float(v) for v in bbox]


def _raster_bands(src: Any) -> list[Any]:
    """The ``raster:bands`` of an open raster, with statistics of a decimated read."""
    from pystac.extensions.raster import DataType, RasterBand, Statistics

    scale = max(1, math.ceil(max(src.width, src.height) / STATISTICS_PIXELS))
    shape = (src.count, max(1, src.height // scale), max(1, src.width // scale))
    data = src.read(out_shape=shape, masked=True)
    bands = []
    for b in range(src.count):
        values = data[b].compressed().astype(np.float64)
        values = values[np.isfinite(values)]
        stats = None
        if values.size:
            stats = Statistics.create(minimum=float(values.min()), maximum=float(values.max()),
                                      mean=float(values.mean()), stddev=float(values.std()),
                                      valid_percent=round(100.0 * values.size
                                                          / data[b].size, 3))
        bands.append(RasterBand.create(
            nodata=_nodata(src.nodata), data_type=DataType(src.dtypes[b]),
            spatial_resolution=float(abs(src.res[0])), statistics=stats))
    return bands


def _nodata(value: float | None) -> float | str | None:
    """A nodata value as the raster extension writes it (NaN and infinities as strings)."""
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return int(value) if float(value).is_integer() else float(value)


# -- chip stores ---------------------------------------------------------------------------------


def write_store_collection(root: str | Path, overwrite: bool = True) -> Path:
    """Write a chip store's STAC Collection, ``ROOT/collection.json`` (whole or not at all).

    Args:
        root: the chip store (complete: its manifest is read).
        overwrite: replace an existing Collection (only a STAC Collection is replaced).

    Returns:
        The Collection's path.
    """
    import pystac
    from pystac.extensions.classification import Classification, ClassificationExtension

    from geospade.formats.chip_store import INDEX, MANIFEST, open_chip_store

    store = open_chip_store(root)
    path = prepare_output(store.root / COLLECTION_NAME, overwrite, kind=STAC_COLLECTION)
    bbox = _index_bbox(store.root / INDEX)
    created = store.manifest.get("created")
    start = _dt.datetime.fromisoformat(created) if isinstance(created, str) else None
    collection = pystac.Collection(
        id=store.root.name or "chips",
        description=(f"geospade chip store: {sum(store.counts.values())} chips of "
                     f"{store.chip_size} px, scheme {store.scheme.name!r}"),
        extent=pystac.Extent(pystac.SpatialExtent([bbox]),
                             pystac.TemporalExtent([[start, None]])),
        license="other",
        extra_fields={"geospade:version": store.manifest.get("geospade_version"),
                      "geospade:counts": store.counts,
                      "geospade:bands": [b.name for b in store.bands]})
    collection.add_asset("index", pystac.Asset(f"./{INDEX}", roles=["metadata"],
                                               media_type="application/geopackage+sqlite3"))
    collection.add_asset("manifest", pystac.Asset(f"./{MANIFEST}", roles=["metadata"],
                                                  media_type=pystac.MediaType.JSON))
    ClassificationExtension.summaries(collection, add_if_missing=True).classes = [
        Classification.create(value=i, name=_stac_name(c.name), description=c.name,
                              color_hint="{:02X}{:02X}{:02X}".format(*c.color))
        for i, c in enumerate(store.scheme.classes)]
    text = json.dumps(collection.to_dict(include_self_link=False, transform_hrefs=False),
                      indent=2)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path


def _stac_name(name: str) -> str:
    """A class name as the classification extension's ``name`` (no spaces)."""
    return "_".join(name.split()) or "class"


def _index_bbox(index: Path) -> list[float]:
    """The WGS84 bounding box of every chip footprint in ``index.gpkg``."""
    import pyogrio
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    info = pyogrio.read_info(index)
    left, bottom, right, top = (float(v) for v in info["total_bounds"])
    if info.get("crs") is None:
        raise GeospadeError(f"{index} has no CRS: the store has no place on the earth")
    return list(transform_bounds(CRS.from_user_input(info["crs"]), "EPSG:4326",
                                 left, bottom, right, top, densify_pts=21))
