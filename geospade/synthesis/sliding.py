"""Sliding-window synthesis over a land-cover raster of any size (DESIGN.md, "Seamless synthesis").

The land cover is read one strip of window rows at a time, mapped through the checkpoint's class
scheme (and edited with vector polygons if asked), cut into windows of the chip size that overlap
by ``overlap`` pixels, run through the generator in batches, and blended into the output by
:class:`geospade.raster.writer.BlendingWriter`, which writes rows as soon as no later window can
touch them. Memory therefore depends on the raster's width and the window size, never on its
height.

Seams: each window is weighted by a ``sin^2`` ramp over the pixels it shares with its neighbours
(flat at the raster's own edges), so neighbouring windows cross-fade over the whole overlap. The
overlap should cover the band along a window's border where zero padding changes the generator's
output (a few pixels per level of the decoder; 1/4 of the window is a good default). Batch-norm
statistics are frozen in eval mode, and a VAE generator gets one code z for the whole raster (from
``seed`` or the ``style`` image), so every window is drawn in the same style.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.features import rasterize
from rasterio.transform import array_bounds
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform
from tqdm import tqdm

from geospade.errors import GeospadeError, check_seed, first_line
from geospade.normalization import BandStats, denormalize
from geospade.outputs import (
    check_not_an_input,
    locked_outputs,
    prepare_folder,
    prepare_output,
    remove_stale_temporaries,
    removing_new_folders,
    same_file,
)
from geospade.raster import tiles_folder
from geospade.raster.codecs import check_codec
from geospade.raster.writer import (
    BlendingWriter,
    Grid,
    StripWriter,
    bounded_gdal_cache,
    edge_overlaps,
    is_rotated,
    ramp,
)
from geospade.schemes import IGNORE_INDEX, ClassScheme
from geospade.synthesis.model import SynthesisModel, load_synthesis_model

# -- windows ------------------------------------------------------------------------------------


def window_offsets(length: int, size: int, overlap: int) -> tuple[list[int], np.ndarray,
                                                                  np.ndarray]:
    """Offsets of windows of ``size`` overlapping by ``overlap`` over ``length`` pixels, and the
    lead/trail overlap of each (for :func:`geospade.raster.writer.ramp`).

    The last window is shifted back to end at ``length`` (it overlaps its neighbour more). A
    length shorter than one window gives one window at 0 that reads past the end (padded).
    """
    stride = size - overlap
    if length <= size:
        offsets = [0]
    else:
        offsets = list(range(0, length - size + 1, stride))
        if offsets[-1] + size < length:
            offsets.append(length - size)
    starts = np.array(offsets)
    lead, trail = edge_overlaps(starts, np.minimum(starts + size, length))
    return offsets, lead, trail


def parse_window(window: str | Sequence[int] | Window | None, width: int, height: int
                 ) -> Window:
    """``"col_off,row_off,width,height"`` (or a tuple/Window) -> the Window.

    Raises:
        GeospadeError: a malformed window, or one that is not inside the raster (it is never
            clipped: the output would silently be smaller than asked).
    """
    if window is None:
        return Window(0, 0, width, height)
    if isinstance(window, str):
        try:
            parts = [int(v) for v in window.replace(" ", "").split(",")]
        except ValueError:
            parts = []
        if len(parts) != 4:
            raise GeospadeError(f"--window must be COL_OFF,ROW_OFF,WIDTH,HEIGHT, not {window!r}")
        window = Window(*parts)
    elif not isinstance(window, Window):
        window = Window(*[int(v) for v in window])
    if window.width <= 0 or window.height <= 0:
        raise GeospadeError("--window needs a positive width and height")
    if (window.col_off < 0 or window.row_off < 0 or window.col_off + window.width > width
            or window.row_off + window.height > height):
        raise GeospadeError(
            f"--window {_fmt_window(window)} reaches outside the land cover ({width}x{height} "
            f"px); it must lie inside: COL_OFF >= 0, ROW_OFF >= 0, COL_OFF+WIDTH <= {width}, "
            f"ROW_OFF+HEIGHT <= {height}")
    return Window(int(window.col_off), int(window.row_off), int(window.width),
                  int(window.height))


def parse_bbox(bbox: str | Sequence[float], transform, width: int, height: int) -> Window:
    """``"minx,miny,maxx,maxy"`` in the land cover's CRS -> the window of pixels it touches.

    Raises:
        GeospadeError: a malformed box, or one that is not inside the raster's bounds (it is
            never clipped, like ``--window``).
    """
    if isinstance(bbox, str):
        try:
            bbox = [float(v) for v in bbox.replace(" ", "").split(",")]
        except ValueError:
            bbox = []
    if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
        raise GeospadeError("--bbox must be MINX,MINY,MAXX,MAXY with min < max, in the land "
                            "cover's CRS")
    win = from_bounds(*bbox, transform=transform)
    # (A box edge within a millionth of a pixel of a pixel edge is on it: float round-off.)
    c0, r0 = math.floor(win.col_off + 1e-6), math.floor(win.row_off + 1e-6)
    c1 = math.ceil(win.col_off + win.width - 1e-6)
    r1 = math.ceil(win.row_off + win.height - 1e-6)
    if c0 < 0 or r0 < 0 or c1 > width or r1 > height:
        corners = [transform * xy for xy in ((0, 0), (width, 0), (0, height), (width, height))]
        xs, ys = [x for x, _ in corners], [y for _, y in corners]
        bounds = ",".join(f"{v:.10g}" for v in (min(xs), min(ys), max(xs), max(ys)))
        given = ",".join(f"{v:.10g}" for v in bbox)
        disjoint = c1 <= 0 or r1 <= 0 or c0 >= width or r0 >= height
        raise GeospadeError(
            f"--bbox {given} {'does not overlap' if disjoint else 'reaches outside'} the land "
            f"cover; it must lie inside its bounds {bounds} ({width}x{height} px)")
    return Window(c0, r0, c1 - c0, r1 - r0)


def _fmt_window(w: Window) -> str:
    return f"{int(w.col_off)},{int(w.row_off)},{int(w.width)},{int(w.height)}"


# -- land cover ---------------------------------------------------------------------------------


def scan_unknown_values(src: rasterio.DatasetReader, area: Window, scheme: ClassScheme
                        ) -> dict[float, int]:
    """Raw values in ``area`` that are neither a class nor unlabelled, with pixel counts.

    Reads the area in strips (memory bounded). An 8/16-bit integer strip is first checked with
    one table lookup per pixel (:meth:`ClassScheme.lookup`) and counted
    (:meth:`ClassScheme.unknown_counts`) only when it holds an unknown value: the common case,
    a clean raster, costs little more than decoding it.
    """
    counts: dict[float, int] = {}
    dtype = np.dtype(src.dtypes[0])
    small_int = dtype.kind in "ui" and dtype.itemsize <= 2
    rows = max(1, (16 << 20) // max(1, int(area.width)))
    for r in range(0, int(area.height), rows):
        win = Window(area.col_off, area.row_off + r, area.width, min(rows, area.height - r))
        raw = src.read(1, window=win)
        if small_int and (scheme.lookup(raw, src.nodata) >= 0).all():
            continue
        for value, n in scheme.unknown_counts(raw, src.nodata).items():
            counts[value] = counts.get(value, 0) + n
    return counts


@dataclass
class Edits:
    """Vector edits reprojected to the land cover's CRS: geometries and the class index each
    burns (later features win where they overlap)."""

    geometries: Any  # geopandas.GeoSeries
    classes: np.ndarray

    def burn(self, labels: np.ndarray, transform) -> None:
        """Burn the edits that touch ``labels`` (a class-index array on ``transform``) in place."""
        from shapely.geometry import box

        h, w = labels.shape
        hits = np.sort(self.geometries.sindex.query(box(*array_bounds(h, w, transform))))
        if len(hits):
            shapes = zip(self.geometries.iloc[hits], self.classes[hits].tolist(), strict=True)
            rasterize(shapes, out=labels, transform=transform)

    def cover(self, height: int, width: int, transform) -> bool:
        """Whether any edit overlaps the ``height`` x ``width`` raster on ``transform`` (more
        than along its border)."""
        from shapely.geometry import Polygon

        footprint = Polygon([transform * xy for xy in
                             ((0, 0), (width, 0), (width, height), (0, height))])
        inside = self.geometries.intersects(footprint) & ~self.geometries.touches(footprint)
        return bool(inside.any())


def load_edits(path: str | Path, field_name: str | None, scheme: ClassScheme, crs) -> Edits:
    """Read a vector layer of edits (any format geopandas reads) for the land cover's CRS.

    Args:
        path: vector file.
        field_name: attribute holding each feature's class: a raw class value or a class name.
        scheme: the checkpoint's class scheme.
        crs: the land cover's CRS.

    Raises:
        GeospadeError: unreadable file, no CRS, missing field, geometries that are not
            polygons, or values that are no class.
    """
    import geopandas as gpd

    path = Path(path)
    if not path.exists():
        raise GeospadeError(f"edits not found: {path}")
    if not field_name:
        raise GeospadeError("--edits needs --edit-field (the attribute with each polygon's class)")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - pyogrio/fiona raise their own error types
        raise GeospadeError(f"cannot read edits {path}: {first_line(exc)}") from None
    if field_name not in gdf.columns:
        fields = ", ".join(c for c in gdf.columns if c != gdf.geometry.name) or "none"
        raise GeospadeError(f"edits {path} have no field {field_name!r} (fields: {fields})")
    if gdf.crs is None:
        raise GeospadeError(f"edits {path} have no CRS; set one (e.g. ogr2ogr -a_srs) so they "
                            "can be placed on the land cover")
    if crs is None:
        raise GeospadeError("the land cover has no CRS, so vector edits cannot be placed on it")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    others = sorted(set(gdf.geom_type) - {"Polygon", "MultiPolygon"})
    if others:
        raise GeospadeError(f"edits {path} have {', '.join(others)} geometries; only polygons "
                            "(Polygon, MultiPolygon) can be burned into the class map")
    classes = []
    for i, value in zip(gdf.index, gdf[field_name], strict=True):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise GeospadeError(f"edits feature {i} has no value in field {field_name!r}")
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        if isinstance(value, (np.integer,)):
            value = int(value)
        classes.append(scheme.index_of(value))
    gdf = gdf.to_crs(crs)
    return Edits(gdf.geometry.reset_index(drop=True), np.array(classes, dtype=np.uint8))


def _class_raster_values(scheme: ClassScheme, src_dtype: str, src_nodata: float | None
                         ) -> tuple[np.ndarray, str, float]:
    """Lookup table class index -> raw value for writing an (edited) class map, its dtype and
    nodata."""
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


def output_nodata(bands: Sequence[BandStats]) -> float:
    """The output's nodata value: the source imagery's nodata when it had one, else 0 for
    unsigned integer bands, the minimum for signed ones and NaN for floats."""
    if bands[0].nodata is not None:
        return bands[0].nodata
    dtype = np.dtype(bands[0].dtype)
    if np.issubdtype(dtype, np.floating):
        return math.nan
    return 0 if dtype.kind == "u" else int(np.iinfo(dtype).min)


# -- synthesis ----------------------------------------------------------------------------------


@dataclass
class _Item:
    strip: int
    row: int
    col: int
    col_index: int
    chip: np.ndarray | None  # None: no valid pixel, nothing to run
    valid: np.ndarray | None  # (h, w) where the window has data; None: everywhere


def synthesize(
    checkpoint: str | Path | SynthesisModel,
    landcover: str | Path,
    out: str | Path | None,
    *,
    edits: str | Path | None = None,
    edit_field: str | None = None,
    save_landcover: str | Path | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
    seed: int = 0,
    style: str | Path | None = None,
    bbox: str | Sequence[float] | None = None,
    window: str | Sequence[int] | None = None,
    cog: bool = False,
    amp: str = "auto",
    tiles_only: str | Path | None = None,
    rank: int = 0,
    world_size: int = 1,
    unknown: str = "error",
    overwrite: bool = False,
    quiet: bool = False,
    block_size: int = 256,
    compress: str = "deflate",
) -> dict[str, Any]:
    """Turn a land-cover raster into georeferenced imagery on the same grid.

    Args:
        checkpoint: checkpoint path (or a loaded :class:`SynthesisModel`).
        landcover: land-cover raster with the raw values of the checkpoint's scheme.
        out: output GeoTIFF (ignored with ``tiles_only``).
        edits: vector layer of polygons to burn into the class map first.
        edit_field: the edits' attribute with a class value or class name per polygon.
        save_landcover: also write the (edited) class map, in raw scheme values, here.
        overlap: pixels shared by neighbouring windows (default: chip size / 4; at most half).
        batch_size: windows per generator call.
        device: "cpu", "cuda", … (default: cuda when available).
        seed: seed of the style code of a VAE generator; same seed -> same bytes.
        style: image whose style a VAE generator copies (needs a style encoder).
        bbox: ``"minx,miny,maxx,maxy"`` in the land cover's CRS: synthesize only the pixels it
            touches; it must lie inside the land cover's bounds (it is not clipped).
        window: ``"col_off,row_off,width,height"`` in pixels: synthesize only that part; it
            must lie inside the land cover.
        cog: write a Cloud-Optimized GeoTIFF.
        amp: "auto" (bf16 where the device has native bf16), "bf16" or "none".
        tiles_only: a folder: write one GeoTIFF per strip of windows there instead of ``out``
            (join them with :func:`geospade.raster.writer.stitch`); the land cover must be
            north-up.
        rank, world_size: with ``tiles_only``, synthesize only this rank's share of the strips
            (contiguous; run ranks 0..world_size-1 on any machines, then stitch).
        unknown: "error" on raw values outside the scheme, or "ignore" (treat as nodata).
        overwrite: replace an existing output (and tiles); never one of the inputs.
        quiet: no progress bar.
        block_size: internal tile size of the output GeoTIFF.
        compress: its codec, "deflate" (default), "zstd", "lzw" or "none".

    Returns:
        Summary: ``output`` (or ``tiles``), ``width``, ``height``, ``bands``, ``windows``,
        ``windows_run``, ``seconds``, ``generator_seconds``, ``mpx_per_s``, ``amp``, ``device``.

    Raises:
        GeospadeError: bad options or inputs, before any output is written; output folders
            the call created are removed when it fails.
    """
    start = time.perf_counter()
    landcover = Path(landcover)
    if not landcover.is_file():
        raise GeospadeError(f"land cover not found: {landcover}")
    if unknown not in ("error", "ignore"):
        raise GeospadeError(f"unknown (--unknown) must be 'error' or 'ignore', not {unknown!r}")
    if world_size < 1:
        raise GeospadeError(f"--world-size must be at least 1, not {world_size}")
    if not 0 <= rank < world_size:
        raise GeospadeError(f"--rank must be in 0..{world_size - 1} (--world-size "
                            f"{world_size}), not {rank}")
    if world_size > 1 and tiles_only is None:
        raise GeospadeError("world_size (--world-size) > 1 needs tiles_only (--tiles-only DIR; "
                            "each rank writes its tiles, stitch joins them)")
    if batch_size < 1:
        raise GeospadeError(f"batch_size (--batch-size) must be at least 1, not {batch_size}")
    check_codec(compress, cog)  # a bad codec fails before any work
    if bbox is not None and window is not None:
        raise GeospadeError("give --bbox or --window, not both")
    check_seed(seed)
    if edit_field is not None and edits is None:
        raise GeospadeError("--edit-field needs --edits (the vector file whose attribute it "
                            "names)")
    if tiles_only is None and out is None:
        raise GeospadeError("an output path (-o OUT.tif) is needed")
    if save_landcover is not None and world_size > 1:
        raise GeospadeError("save_landcover (--save-landcover) cannot be combined with "
                            "world_size (--world-size) > 1")
    if (tiles_only is None and save_landcover is not None
            and same_file(out, save_landcover)):
        raise GeospadeError(f"-o and --save-landcover name the same file ({out}); give two "
                            "different files")
    inputs = [("the land cover", landcover), ("the edits file", edits),
              ("the style image", style)]
    if not isinstance(checkpoint, SynthesisModel):
        inputs.append(("the checkpoint", checkpoint))
    folders = [Path(out).parent] if tiles_only is None else [Path(tiles_only)]
    if save_landcover is not None:
        folders.append(Path(save_landcover).parent)
    if tiles_only is not None:
        check_not_an_input(tiles_only, inputs, "tiles folder", "write the tiles to a new folder")
    locks = [(None if tiles_only is not None else out, "output"),
             (save_landcover, "--save-landcover output"),
             (None if tiles_only is None else Path(tiles_only) / f"rank{rank}", "tiles folder")]
    # A failed run takes back the output folders it created.
    with removing_new_folders(folders), locked_outputs(locks):
        if tiles_only is None:
            out = prepare_output(out, overwrite, inputs)
        if save_landcover is not None:
            save_landcover = prepare_output(save_landcover, overwrite, inputs)
        if tiles_only is not None:
            prepare_folder(tiles_only, "tiles folder")

        model = checkpoint if isinstance(checkpoint, SynthesisModel) else load_synthesis_model(
            checkpoint, device=device, amp=amp, seed=seed, style=style)
        size = model.chip_size
        if overlap is None:
            overlap = size // 4
        if not 0 <= overlap <= size // 2:
            raise GeospadeError(f"--overlap must be between 0 and {size // 2} (half the "
                                f"{size}-pixel window), not {overlap}")

        try:
            src = rasterio.open(landcover)
        except rasterio.errors.RasterioIOError as exc:
            raise GeospadeError(f"{landcover} is not a readable raster "
                                f"({first_line(exc)})") from None
        with src, bounded_gdal_cache():
            if tiles_only is not None and is_rotated(src.transform):
                raise GeospadeError(
                    f"{landcover} is rotated (not north-up), and --tiles-only writes tiles for "
                    "'geospade stitch', which joins north-up tiles only; synthesize the whole "
                    "raster with -o instead, or warp it north-up first (gdalwarp IN.tif "
                    "NORTHUP.tif)")
            if window is not None:
                area = parse_window(window, src.width, src.height)
            elif bbox is not None:
                area = parse_bbox(bbox, src.transform, src.width, src.height)
            else:
                area = Window(0, 0, src.width, src.height)
            scheme = model.scheme
            if unknown == "error":
                bad = scan_unknown_values(src, area, scheme)
                if bad:
                    listed = ", ".join(f"{v} ({n} px)" for v, n in sorted(bad.items())[:20])
                    more = "" if len(bad) <= 20 else f" and {len(bad) - 20} more"
                    raise GeospadeError(
                        f"{landcover} has values outside the checkpoint's scheme {scheme.name!r}: "
                        f"{listed}{more}; use --unknown ignore to treat them as no data")
            width, height = int(area.width), int(area.height)
            grid = Grid(src.crs, window_transform(area, src.transform), width, height)
            edit_layer = None
            if edits is not None:
                edit_layer = load_edits(edits, edit_field, scheme, src.crs)
                if not edit_layer.cover(height, width, grid.transform):
                    # A warning, not an error: one edits layer may serve many rasters or parts.
                    part = "" if window is None and bbox is None else " part asked for"
                    print(f"geospade: warning: no polygon of edits {edits} overlaps the land "
                          f"cover{part}; the output is unedited (check the edits' CRS and extent)",
                          file=sys.stderr, flush=True)
            run = tiles_folder.run_id({
                "checkpoint": tiles_folder.file_identity(
                    None if isinstance(checkpoint, SynthesisModel) else checkpoint),
                "landcover": tiles_folder.file_identity(landcover),
                "edits": tiles_folder.file_identity(edits), "edit_field": edit_field,
                "style": tiles_folder.file_identity(style), "seed": seed,
                "area": [int(v) for v in area.flatten()], "overlap": overlap, "amp": model.amp,
                "world_size": world_size, "unknown": unknown,
            })
            return _run(model, src, area, grid, out, edit_layer, save_landcover, overlap,
                        batch_size, cog, tiles_only, rank, world_size, unknown, overwrite, quiet,
                        block_size, compress, start, inputs, run)


def _run(model: SynthesisModel, src, area: Window, grid: Grid, out, edit_layer, save_landcover,
         overlap: int, batch_size: int, cog: bool, tiles_only, rank: int, world_size: int,
         unknown: str, overwrite: bool, quiet: bool, block_size: int, compress: str,
         start: float, inputs: list[tuple[str, str | Path | None]], run: str = ""
         ) -> dict[str, Any]:
    size = model.chip_size
    width, height = grid.width, grid.height
    rows, lead_y, trail_y = window_offsets(height, size, overlap)
    cols, lead_x, trail_x = window_offsets(width, size, overlap)
    h_eff, w_eff = min(size, height), min(size, width)
    ramp_y = [ramp(h_eff, a, b) for a, b in zip(lead_y, trail_y, strict=True)]
    ramp_x = [ramp(w_eff, a, b) for a, b in zip(lead_x, trail_x, strict=True)]
    # Windows with flat ramps (all of them at overlap 0) and no nodata are added unweighted:
    # the same sums as a weight of 1.0, without building a weight array per window.
    flat_y = [bool((r == 1).all()) for r in ramp_y]
    flat_x = [bool((r == 1).all()) for r in ramp_x]
    strips = np.array_split(np.arange(len(rows)), world_size)[rank].tolist()

    bands = model.bands
    nodata = output_nodata(bands)
    names = [b.name for b in bands]
    common = {"count": len(bands), "dtype": np.dtype(bands[0].dtype).name, "nodata": nodata,
              "to_output": lambda v: denormalize(v, bands), "descriptions": names,
              "block_size": block_size, "compress": compress}

    def tile_path(j: int) -> Path:
        return Path(tiles_only) / f"{Path(src.name).stem}_r{area.row_off + rows[j]:07d}.tif"

    if tiles_only is not None:
        for j in strips:
            check_not_an_input(tile_path(j), inputs, "tile", "write the tiles to another folder")
            remove_stale_temporaries(tile_path(j))
        tiles_folder.claim(tiles_only, run, [tile_path(j).name for j in range(len(rows))],
                           overwrite)
    if tiles_only is not None and not overwrite:
        existing = [tile_path(j) for j in strips if tile_path(j).exists()]
        if existing:
            raise GeospadeError(f"{len(existing)} tile(s) already exist in {tiles_only}, e.g. "
                                f"{existing[0].name} (use --overwrite to replace them)")

    def strip_writer(j: int) -> BlendingWriter:
        path = tile_path(j)
        strip_grid = Grid(grid.crs, grid.transform * grid.transform.translation(0, rows[j]),
                          width, h_eff)
        return BlendingWriter(path, strip_grid, overwrite=overwrite, overviews=False, **common)

    writer = None if tiles_only is not None else BlendingWriter(out, grid, cog=cog,
                                                                overwrite=overwrite, **common)
    lc_writer = None
    if save_landcover is not None:
        lut, lc_dtype, lc_nodata = _class_raster_values(model.scheme, src.dtypes[0], src.nodata)
        cmap = None
        if lc_dtype in ("uint8", "uint16"):
            cmap = {int(c.value): (*c.color, 255) for c in model.scheme.classes}
            cmap[int(lc_nodata)] = (0, 0, 0, 0)
        lc_writer = StripWriter(save_landcover, grid, 1, lc_dtype, nodata=lc_nodata,
                                descriptions=["land cover (edited)"], colormap=cmap, cog=cog,
                                overwrite=overwrite, resampling="nearest", block_size=block_size,
                                compress=compress)

    def items() -> Iterator[_Item]:
        for j in strips:
            r = rows[j]
            win = Window(area.col_off, area.row_off + r, width, h_eff)
            raw = src.read(1, window=win)
            labels = model.scheme.encode(raw, src.nodata, unknown="ignore")
            if edit_layer is not None:
                edit_layer.burn(labels, window_transform(win, src.transform))
            if lc_writer is not None:
                done = rows[j + 1] - r if j + 1 < len(rows) else h_eff
                lc_writer.write(lut[labels[:done]][None])
            padded = labels
            if h_eff < size or w_eff < size:
                padded = np.pad(labels, ((0, size - h_eff), (0, max(0, size - width))),
                                mode="symmetric")
            # Validity per strip; per window from running counts of the columns that have
            # nodata / have data. Most windows are entirely valid and need no mask of their own.
            valid = labels != IGNORE_INDEX
            if valid.all():
                for k, c in enumerate(cols):
                    yield _Item(j, r, c, k, padded[:, c:c + size], None)
                continue
            holes = np.concatenate([[0], np.cumsum(~valid.all(axis=0))])
            data = np.concatenate([[0], np.cumsum(valid.any(axis=0))])
            for k, c in enumerate(cols):
                if holes[c + w_eff] == holes[c]:
                    yield _Item(j, r, c, k, padded[:, c:c + size], None)
                elif data[c + w_eff] > data[c]:
                    yield _Item(j, r, c, k, padded[:, c:c + size], valid[:, c:c + w_eff])
                else:
                    yield _Item(j, r, c, k, None, None)

    n_windows = len(strips) * len(cols)
    open_strips: dict[int, BlendingWriter] = {}
    tiles: list[str] = []
    gen_seconds = 0.0
    windows_run = 0

    # Unweighted windows side by side in one strip (overlap 0) are added as one piece, across
    # generator batches: one BlendingWriter.add per run instead of per window, with the same
    # sums (and a whole strip goes straight to the file).
    run: list[tuple[_Item, np.ndarray]] = []

    def flush_run() -> None:
        if not run:
            return
        first = run[0][0]
        image = run[0][1] if len(run) == 1 else np.concatenate([im for _, im in run], axis=2)
        # A run as wide as the raster, in a strip that shares no rows with the next, is final:
        # it goes straight to the file.
        whole = image.shape[2] == width
        if tiles_only is None:
            writer.add(image, first.row, first.col, final=whole and not trail_y[first.strip])
        else:
            open_strips[first.strip].add(image, 0, first.col, final=whole)
        run.clear()

    def dispatch(item: _Item, image: np.ndarray | None) -> None:
        flat = (image is not None and flat_x[item.col_index]
                and (tiles_only is not None or flat_y[item.strip]) and item.valid is None)
        if run and not (flat and item.strip == run[-1][0].strip
                        and item.col == run[-1][0].col + w_eff):
            flush_run()
        if tiles_only is not None:
            for j in [j for j in open_strips if j < item.strip]:
                tiles.append(str(open_strips.pop(j).close()))
            if item.strip not in open_strips:
                open_strips[item.strip] = strip_writer(item.strip)
        if image is None:
            return
        image = image[:, :h_eff, :w_eff]
        wx = ramp_x[item.col_index]
        if flat:
            run.append((item, image))
        elif tiles_only is not None:
            weight = np.broadcast_to(wx, (h_eff, w_eff))
            if item.valid is not None:
                weight = weight * item.valid
            open_strips[item.strip].add(image, 0, item.col, weight.astype(np.float32))
        else:
            weight = np.outer(ramp_y[item.strip], wx)
            if item.valid is not None:
                weight *= item.valid
            writer.add(image, item.row, item.col, weight.astype(np.float32))

    bar = tqdm(total=n_windows, unit="win", desc="synthesize",
               disable=quiet or not sys.stderr.isatty())
    try:
        batch: list[_Item] = []

        def run_batch() -> None:
            nonlocal gen_seconds, windows_run
            todo = [it for it in batch if it.chip is not None]
            images: list[np.ndarray | None] = [None] * len(batch)
            if todo:
                t0 = time.perf_counter()
                result = model(np.stack([it.chip for it in todo]))
                gen_seconds += time.perf_counter() - t0
                windows_run += len(todo)
                it_result = iter(result)
                images = [next(it_result) if it.chip is not None else None for it in batch]
            for it, image in zip(batch, images, strict=True):
                dispatch(it, image)
            bar.update(len(batch))
            batch.clear()

        to_run = 0  # windows in the batch with data
        for item in items():
            batch.append(item)
            to_run += item.chip is not None
            if to_run >= batch_size:
                run_batch()
                to_run = 0
        if batch:
            run_batch()
        flush_run()
        for j in sorted(open_strips):
            tiles.append(str(open_strips.pop(j).close()))
        output = None
        if writer is not None:
            output = str(writer.close())
        if lc_writer is not None:
            lc_writer.close()
    except BaseException:
        for w in open_strips.values():
            w.abort()
        if writer is not None:
            writer.abort()
        if lc_writer is not None:
            lc_writer.abort()
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    # Rows this process synthesized (a rank's strips overlap each other).
    pixels = rows[strips[-1]] + h_eff - rows[strips[0]] if strips else 0
    summary = {
        "output": output, "tiles": tiles, "width": width, "height": height,
        "bands": len(bands), "windows": n_windows, "windows_run": windows_run,
        "window_size": size, "overlap": overlap, "seconds": seconds,
        "generator_seconds": gen_seconds, "mpx_per_s": pixels * width / seconds / 1e6,
        "amp": model.amp, "device": str(model.device),
        "landcover_out": str(save_landcover) if save_landcover is not None else None,
    }
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A one-paragraph human summary of :func:`synthesize`'s result."""
    where = summary["output"] or f"{len(summary['tiles'])} tile(s) in " + (
        str(Path(summary["tiles"][0]).parent) if summary["tiles"] else "(none)")
    text = (f"synthesized {summary['width']}x{summary['height']} px, {summary['bands']} band(s): "
            f"{summary['windows']} windows of {summary['window_size']} px (overlap "
            f"{summary['overlap']}, {summary['windows_run']} run) in {summary['seconds']:.1f} s "
            f"({summary['mpx_per_s']:.3f} Mpx/s, {summary['device']}, amp {summary['amp']}) "
            f"-> {where}")
    if summary.get("landcover_out"):
        text += f"; class map -> {summary['landcover_out']}"
    return text
