"""``geospade stitch``: georeferenced tiles joined into one GeoTIFF/COG.

Where tiles overlap they are cross-faded with the same weights ``geospade synthesize`` uses
between windows (:mod:`geospade.raster.blend`), so the tiles of ``synthesize --tiles-only``
join without seams (docs/design.md, "Synthesis output nodata"). Tiles are read one at a time, in
order of their top row, into a :class:`~geospade.raster.blending_writer.BlendingWriter`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from geospade.errors import GeospadeError, first_line, reading
from geospade.outputs import OutputLock, prepare_output, removing_new_folders
from geospade.raster.blend import pair_overlaps, ramp
from geospade.raster.blending_writer import BlendingWriter
from geospade.raster.codecs import check_codec
from geospade.raster.gdal_env import limited_cache
from geospade.raster.grid import Grid, is_rotated
from geospade.raster.strip_writer import DEFAULT_BLOCK_SIZE
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
    metas = []
    for p in paths:
        if not p.is_file():
            raise GeospadeError(f"tile not found: {p}")
        try:
            with rasterio.open(p) as src:
                metas.append((p, src.crs, src.transform, src.width, src.height, src.count,
                               src.dtypes[0], src.nodata, src.descriptions,
                               tuple(src.colorinterp)))
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
            "colorinterp": interp0}
    return tiles, grid, meta


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
           block_size: int = DEFAULT_BLOCK_SIZE, compress: str = "deflate") -> dict[str, Any]:
    """Join georeferenced tiles into one GeoTIFF/COG, cross-fading where they overlap.

    Tiles must share CRS, pixel size, pixel grid, band count and dtype. Where tiles overlap,
    each fades in over the part it shares with the tiles before it and out over the part it
    shares with the tiles after it (:func:`~geospade.raster.blend.ramp`), the same weights
    ``geospade synthesize`` uses between windows; tile nodata pixels get no weight. Pixels no
    tile covers are nodata.

    Args:
        tiles: tile paths (any GDAL raster).
        out: output GeoTIFF path.
        cog: write a Cloud-Optimized GeoTIFF.
        overwrite: replace an existing ``out``.
        quiet: no progress bar.
        block_size: internal tile size of the output.
        compress: "deflate", "zstd", "lzw" or "none".

    Returns:
        Summary: ``output``, ``width``, ``height``, ``tiles``, ``seconds``.
    """
    import time

    check_codec(compress, cog)  # a bad codec fails before any work
    start = time.perf_counter()
    with (limited_cache(GDAL_NUM_THREADS="ALL_CPUS"), removing_new_folders([Path(out).parent]),
          OutputLock(out)):
        return _stitch(tiles, out, cog, overwrite, quiet, block_size, compress, start)


def _stitch(tiles: Sequence[str | Path], out: str | Path, cog: bool, overwrite: bool,
            quiet: bool, block_size: int, compress: str, start: float) -> dict[str, Any]:
    import time

    from tqdm import tqdm

    placed, grid, meta = _tile_offsets([Path(t) for t in tiles])
    check_stitch_tiles([t.path for t in placed])
    prepare_output(out, overwrite, inputs=[("a tile", t.path) for t in placed])
    ramps = tile_weights(placed)
    order = sorted(range(len(placed)), key=lambda i: (placed[i].row, placed[i].col))
    nodata = meta["nodata"]
    writer = BlendingWriter(out, grid, meta["count"], meta["dtype"], nodata=nodata,
                            descriptions=[d or "" for d in meta["descriptions"]]
                            if any(meta["descriptions"]) else None,
                            colorinterp=list(meta["colorinterp"]), cog=cog, overwrite=overwrite,
                            block_size=block_size, compress=compress)
    with writer, tqdm(total=len(order), unit="tile", disable=quiet or _not_a_tty(),
                      desc="stitch") as bar:
        for i in order:
            t = placed[i]
            lead_y, trail_y, lead_x, trail_x = ramps[i]
            with reading(t.path, "tile"), rasterio.open(t.path) as src:
                data = src.read(out_dtype="float32")
                valid = src.dataset_mask() > 0
            weight = np.outer(ramp(t.height, lead_y, trail_y), ramp(t.width, lead_x, trail_x))
            writer.add(data, t.row, t.col, (weight * valid).astype(np.float32))
            bar.update()
    return {"output": str(writer.path), "width": grid.width, "height": grid.height,
            "tiles": len(placed), "seconds": time.perf_counter() - start}


def _not_a_tty() -> bool:
    import sys

    return not sys.stderr.isatty()
