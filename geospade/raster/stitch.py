"""``geospade stitch``: georeferenced tiles joined into one GeoTIFF/COG.

Where tiles overlap they are cross-faded with the same weights ``geospade synthesize`` uses
between windows (:mod:`geospade.raster.blend`), so the tiles of ``synthesize --tiles-only``
join without seams (docs/design.md, "Synthesis output nodata"). Tiles are read one at a time, in
order of their top row, into a :class:`~geospade.raster.blending_writer.BlendingWriter`. The
output keeps the provenance tags its tiles agree on (:mod:`geospade.provenance`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from geospade.errors import GeospadeError, first_line
from geospade.io_errors import reading
from geospade.log import progress
from geospade.outputs import locked_outputs, prepare_output, removing_new_folders
from geospade.provenance import VERSION, common_tags, software_tags
from geospade.raster.blend import pair_overlaps, ramp
from geospade.raster.blending_writer import BlendingWriter
from geospade.raster.gdal_env import limited_cache
from geospade.raster.grid import Grid, is_rotated
from geospade.raster.strip_writer import (
    DEFAULT_BLOCK_SIZE,
    check_block_size,
    check_creation_options,
    check_output_codec,
)
from geospade.raster.tiles_folder import check_stitch_tiles


@dataclass(frozen=True)
class _Tile:
    path: Path
    row: int
    col: int
    height: int
    width: int


def _tile_offsets(paths: Sequence[Path]) -> tuple[list[_Tile], Grid, dict[str, Any]]:
    """Check that the tiles share a CRS, pixel size, pixel grid, bands and dtype; place them."""
    if not paths:
        raise GeospadeError("no tiles to stitch")
    metas, tags = [], []
    for p in paths:
        if not p.is_file():
            raise GeospadeError(f"tile not found: {p}")
        try:
            with rasterio.open(p) as src:
                metas.append((p, src.crs, src.transform, src.width, src.height, src.count,
                               src.dtypes[0], src.nodata, src.descriptions,
                               tuple(src.colorinterp)))
                tags.append(src.tags())
        except rasterio.errors.RasterioIOError as exc:
            raise GeospadeError(f"{p} is not a readable raster ({first_line(exc)})"
                                ) from None
    p0, crs0, t0, *_ = metas[0]
    _, _, _, _, _, count0, dtype0, nodata0, desc0, interp0 = metas[0]
    if crs0 is None:
        raise GeospadeError(f"tile {p0} has no CRS")
    if is_rotated(t0):
        raise GeospadeError(f"tile {p0} is rotated; stitch needs north-up tiles")
    tiles = []
    for p, crs, t, w, h, count, dtype, _, _, _ in metas:
        if crs != crs0:
            raise GeospadeError(f"tile {p} is in another CRS than {p0} ({crs} vs {crs0})")
        if (is_rotated(t) or not math.isclose(t.a, t0.a, rel_tol=1e-9)
                or not math.isclose(t.e, t0.e, rel_tol=1e-9)):
            raise GeospadeError(
                f"tile {p} has pixel size ({t.a:g}, {-t.e:g}), {p0} has ({t0.a:g}, {-t0.e:g}): "
                "tiles must share their pixel size"
            )
        col, row = (t.c - t0.c) / t0.a, (t.f - t0.f) / t0.e
        if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
            raise GeospadeError(f"tile {p} is not on the pixel grid of {p0} (offset by a "
                                "fraction of a pixel)")
        if count != count0 or dtype != dtype0:
            raise GeospadeError(f"tile {p} has {count} {dtype} bands, {p0} has {count0} {dtype0}")
        tiles.append(_Tile(p, round(row), round(col), h, w))
    r0 = min(t.row for t in tiles)
    c0 = min(t.col for t in tiles)
    tiles = [_Tile(t.path, t.row - r0, t.col - c0, t.height, t.width) for t in tiles]
    width = max(t.col + t.width for t in tiles)
    height = max(t.row + t.height for t in tiles)
    grid = Grid(crs0, t0 * Affine.translation(c0, r0), width, height)
    meta = {"count": count0, "dtype": dtype0, "nodata": nodata0, "descriptions": desc0,
            "colorinterp": interp0, "tags": _output_tags(tags)}
    return tiles, grid, meta


def _output_tags(tile_tags: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The stitched raster's tags: the provenance its tiles share; the tiles' geospade version
    when they are geospade's, else this one's."""
    shared = common_tags(list(tile_tags))
    return shared if VERSION in shared else {**shared, **software_tags()}


def tile_weights(tiles: Sequence[_Tile]) -> list[tuple[int, int, int, int]]:
    """(lead_y, trail_y, lead_x, trail_x) ramp lengths of each tile from its overlaps.

    The same lengths as :func:`~geospade.raster.blend.edge_overlaps` along each axis among the
    tiles that overlap on the other axis, but found from the pairs of tiles that touch (a
    shapely STRtree of their extents), so time and memory grow with the number of neighbours,
    not with n^2.
    """
    import shapely

    r0 = np.array([t.row for t in tiles], dtype=np.int64)
    r1 = r0 + np.array([t.height for t in tiles], dtype=np.int64)
    c0 = np.array([t.col for t in tiles], dtype=np.int64)
    c1 = c0 + np.array([t.width for t in tiles], dtype=np.int64)
    boxes = shapely.box(c0, r0, c1, r1)
    t, u = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    rows_meet = (r0[t] < r1[u]) & (r0[u] < r1[t])
    cols_meet = (c0[t] < c1[u]) & (c0[u] < c1[t])
    lead_y, trail_y = pair_overlaps(r0, r1, t[cols_meet], u[cols_meet])
    lead_x, trail_x = pair_overlaps(c0, c1, t[rows_meet], u[rows_meet])
    return [tuple(int(v) for v in x) for x in zip(lead_y, trail_y, lead_x, trail_x, strict=True)]


def stitch(tiles: Sequence[str | Path], out: str | Path, cog: bool = False,
           overwrite: bool = False, quiet: bool = False,
           block_size: int = DEFAULT_BLOCK_SIZE, compress: str = "deflate",
           creation_options: Mapping[str, str] | None = None,
           stac: bool = False) -> dict[str, Any]:
    """Join georeferenced tiles into one GeoTIFF/COG, cross-fading where they overlap.

    Tiles must share CRS, pixel size, pixel grid, band count and dtype. Where tiles overlap,
    each fades in over the part it shares with the tiles before it and out over the part it
    shares with the tiles after it (:func:`~geospade.raster.blend.ramp`), the same weights
    ``geospade synthesize`` uses between windows; tile nodata pixels get no weight. Pixels no
    tile covers are nodata. The output keeps the ``GEOSPADE_*`` tags every tile has with the
    same value (the provenance of ``synthesize --tiles-only`` tiles).

    Args:
        tiles: tile paths (any GDAL raster).
        out: output GeoTIFF path.
        cog: write a Cloud-Optimized GeoTIFF.
        overwrite: replace an existing ``out`` (and its STAC Item).
        quiet: no progress bar.
        block_size: internal tile size of the output (a multiple of 16).
        compress: "deflate", "zstd", "lzw" or "none"; "jpeg" or "webp" for tiles of 3 uint8
            bands (no-data pixels then go to an internal mask).
        creation_options: GDAL creation options of the output, ``{"KEY": "VALUE"}``, over
            geospade's (GTiff's, or the COG driver's with ``cog``).
        stac: also write a STAC Item beside the output (``OUT.json``).

    Returns:
        Summary: ``output``, ``width``, ``height``, ``tiles``, ``seconds``, ``stac``.
    """
    import time

    from geospade.stac import item_path

    check_output_codec(compress, cog)  # a bad codec or block size fails before any work
    check_block_size(block_size)
    start = time.perf_counter()
    writer_options = {"cog": cog, "block_size": block_size, "compress": compress,
                      "creation_options": creation_options}
    locks = [(out, "output"), (item_path(out) if stac else None, "--stac item")]
    with (limited_cache(GDAL_NUM_THREADS="ALL_CPUS"), removing_new_folders([Path(out).parent]),
          locked_outputs(locks)):
        return _stitch(tiles, out, overwrite, quiet, stac, start, writer_options)


def _stitch(tiles: Sequence[str | Path], out: str | Path, overwrite: bool, quiet: bool,
            stac: bool, start: float, writer_options: dict[str, Any]) -> dict[str, Any]:
    import time

    from geospade.stac import prepare_item, write_item

    placed, grid, meta = _tile_offsets([Path(t) for t in tiles])
    check_stitch_tiles([t.path for t in placed])
    o = writer_options
    check_output_codec(o["compress"], o["cog"], meta["count"], meta["dtype"])
    o["creation_options"] = check_creation_options(
        o["creation_options"], cog=o["cog"], count=meta["count"], dtype=meta["dtype"],
        compress=o["compress"])
    inputs = [("a tile", t.path) for t in placed]
    prepare_output(out, overwrite, inputs=inputs)
    stac_item = prepare_item(out, overwrite, inputs) if stac else None
    ramps = tile_weights(placed)
    order = sorted(range(len(placed)), key=lambda i: (placed[i].row, placed[i].col))
    writer = BlendingWriter(out, grid, meta["count"], meta["dtype"], nodata=meta["nodata"],
                            descriptions=[d or "" for d in meta["descriptions"]]
                            if any(meta["descriptions"]) else None,
                            colorinterp=list(meta["colorinterp"]), overwrite=overwrite,
                            tags=meta["tags"], **writer_options)
    with writer, progress(total=len(order), desc="stitch", unit="tile", quiet=quiet,
                          logger="stitch") as bar:
        for i in order:
            t = placed[i]
            lead_y, trail_y, lead_x, trail_x = ramps[i]
            with reading(t.path, "tile"), rasterio.open(t.path) as src:
                data = src.read(out_dtype="float32")
                valid = src.dataset_mask() > 0
            weight = np.outer(ramp(t.height, lead_y, trail_y), ramp(t.width, lead_x, trail_x))
            writer.add(data, t.row, t.col, (weight * valid).astype(np.float32))
            bar.update()
    stac_path = None if stac_item is None else str(write_item(writer.path, stac_item))
    return {"output": str(writer.path), "width": grid.width, "height": grid.height,
            "tiles": len(placed), "seconds": time.perf_counter() - start, "stac": stac_path}

