"""`geospade tile`: cut a land-cover raster and its imagery into aligned mask/image chips.

How the work is split (docs/design.md, "Tile I/O"; ``benchmarks/bench_tile.py`` has the
numbers): chips are grouped into read tasks of about ``TASK_ROWS`` x ``TASK_COLS`` pixels; a
task reads its land-cover and imagery window once (so a source block is decoded once per task,
not once per chip) and cuts all its chips from memory. Memory per worker is therefore a few task
windows, whatever the raster size. Tasks run in a process pool with ``workers > 1``; what a
worker does is :mod:`geospade.raster.tiling_worker`.

:func:`tile` runs these steps: scan the two rasters (or each pair of two folders,
:mod:`geospade.raster.pairs`), choose the split blocks, plan the chips and their split, check
every label value, cut the chips (writing ``index.gpkg`` as they come), write the manifest, and
move the store into place. The store is built in a hidden temporary folder next to ``out`` and
renamed into place after the manifest is written, so a failed or interrupted run leaves nothing
that looks complete.
"""

from __future__ import annotations

import math
import multiprocessing
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from geospade.errors import ArgumentError, GeospadeError, check_seed
from geospade.formats import chip_store
from geospade.log import Progress, progress
from geospade.normalization import BandStats, fixed_range, nodata_to_json
from geospade.outputs import (
    CHIP_STORE,
    OutputLock,
    check_not_an_input,
    check_replaceable,
    prepare_folder,
    same_file,
)
from geospade.raster.alignment import RESAMPLING, Alignment, align, open_raster, same_crs
from geospade.raster.bands import (
    ALPHA_CHOICES,
    BandChoice,
    RGBBands,
    choose_bands,
    resolve_alpha,
    rgb_bands,
)
from geospade.raster.codecs import check_codec
from geospade.raster.grid import Grid
from geospade.raster.pairs import RasterPair, raster_pairs
from geospade.raster.sources import source_record
from geospade.raster.tiling_worker import (
    PlannedChip,
    ReadTask,
    TaskResult,
    TileJob,
    TileWorker,
    final_name,
)
from geospade.raster.windows import (
    assign_block_grids,
    block_grid,
    check_fractions,
    chip_offsets,
    chip_split,
    group_offsets,
    largest_block,
)
from geospade.schemes import IGNORE_INDEX, ClassScheme, UnknownClassValuesError, load_scheme
from geospade.vectors import read_vector

TASK_ROWS = 1024
TASK_COLS = 2048
SAMPLE_CAP = 1_000_000  # most sample pixels per band kept in memory


@dataclass
class TileSummary:
    """What :func:`tile` wrote.

    Attributes:
        out: the chip store folder.
        counts: chips per split.
        dropped: chips not written, per reason (``nodata``, ``outside_aoi``, ``straddles_split``).
        class_pixels: pixels per class index, per split.
        class_names: class names in index order.
        warped: whether the imagery was warped onto the land-cover grid.
        bands: the chip bands with their normalisation stats.
        block: side of a split block in chip steps (None: no val/test split was asked for).
        block_auto: the block side was chosen by tiling (``--block`` not given).
        georeferenced: the rasters have a CRS (False: a pixel-aligned pair without one).
        alpha: what happened to a band the imagery flags as alpha (None: no such band).
        rgb: the chip bands drawn as red, green, blue.
        pairs: land-cover/imagery pairs tiled (more than one from two folders).
    """

    out: Path
    counts: dict[str, int]
    dropped: dict[str, int]
    class_pixels: dict[str, list[int]]
    class_names: list[str]
    warped: bool = False
    bands: list[BandStats] = field(default_factory=list)
    block: int | None = None
    block_auto: bool = False
    georeferenced: bool = True
    alpha: str | None = None
    rgb: RGBBands | None = None
    pairs: int = 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """A short human-readable report: chips per split, class distribution, drops."""
        lines = [f"wrote {self.total} chips to {self.out}"]
        lines.append("  chips per split: " + ", ".join(f"{k} {v}" for k, v in self.counts.items()))
        totals = np.sum([np.asarray(v, dtype=np.int64) for v in self.class_pixels.values()], axis=0)
        all_px = max(int(totals.sum()), 1)
        lines.append("  class distribution:")
        for name, n in zip(self.class_names, totals, strict=True):
            lines.append(f"    {name:<36} {100.0 * n / all_px:6.2f}%")
        dropped = {k: v for k, v in self.dropped.items() if v}
        if dropped:
            why = ", ".join(f"{v} {_DROP_TEXT.get(k, k)}" for k, v in dropped.items())
            lines.append(f"  dropped: {why}")
        else:
            lines.append("  dropped: none")
        lines.extend(f"  {line}" for line in self._notes())
        return "\n".join(lines)

    def _notes(self) -> list[str]:
        """The lines on how the inputs were read: pairs, CRS, warping, blocks, bands."""
        notes = []
        if self.pairs > 1:
            notes.append(f"tiled {self.pairs} land-cover/imagery pairs matched by file name")
        if not self.georeferenced:
            notes.append("no CRS: chips are pixel-aligned, outputs carry no CRS")
        if self.warped:
            notes.append("imagery was warped onto the land-cover grid")
        if self.block is not None:
            how = "chosen automatically; --block fixes it" if self.block_auto else "--block"
            notes.append(f"split blocks: {self.block} x {self.block} chip steps ({how})")
        if self.alpha is not None:
            notes.append(self.alpha)
        if self.rgb is not None:
            notes.append(f"preview RGB: {self.rgb.describe()}")
        return notes


_DROP_TEXT = {
    "nodata": "over --max-nodata",
    "outside_aoi": "outside --aoi",
    "straddles_split": "straddling a train/val/test block boundary",
}



def tile(
    landcover: str | Path,
    imagery: str | Path,
    out: str | Path,
    *,
    scheme: str | Path | ClassScheme = "chesapeake7",
    size: int = 256,
    stride: int | None = None,
    max_nodata: float = 0.0,
    aoi: str | Path | None = None,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    block: int | None = None,
    workers: int = 1,
    seed: int = 0,
    unknown: str = "error",
    resampling: str = "bilinear",
    compress: str = "none",
    bands: Sequence[int] | None = None,
    alpha: str = "auto",
    rgb: Sequence[int] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> TileSummary:
    """Cut a land-cover raster and its imagery into aligned chips (the chip store of
    docs/design.md, "Chip store").

    Two rasters without a CRS (an ML dataset's image/label pair, PNG or TIFF) of the same size
    are taken as pixel-aligned; the chips and the index then carry no CRS. Two folders tile
    every pair of files of the same name into one store (:mod:`geospade.raster.pairs`), chip ids
    starting with the file's stem.

    Args:
        landcover: single-band land-cover raster (integer, or float with integral values); its
            grid is the reference. Or a folder of them.
        imagery: imagery raster; warped onto the land-cover grid if its CRS, resolution or
            pixel offset differ. Or a folder of them, matched with ``landcover``'s by name.
        out: the chip store folder to create.
        scheme: class scheme name (``chesapeake7``, ``chesapeake13``, ``nlcd``), JSON file or
            :class:`ClassScheme`.
        size: chip size in pixels.
        stride: step between chips (default ``size``; smaller means overlapping chips).
        max_nodata: largest fraction of nodata/unlabelled pixels a kept chip may have.
        aoi: vector file (any CRS); chips not intersecting its geometries are dropped.
        val_fraction, test_fraction: fractions of split blocks sent to val and test.
        block: side of a split block, in chip steps; None chooses the largest at which each
            fraction is at least one block
            (:func:`geospade.raster.windows.largest_block`).
        workers: processes cutting chips.
        seed: seed of the split and of the stats sample.
        unknown: ``error`` on label values outside the scheme, or ``ignore`` (map them to 255).
        resampling: ``bilinear`` or ``cubic``, for warped imagery only.
        compress: chip compression: ``none`` (fastest, see ``benchmarks/bench_tile.py``),
            ``zstd`` (level 1), ``lzw`` or ``deflate`` (level 1).
        bands: 1-based imagery bands to keep, in order (default: all, less an alpha band used
            as the mask).
        alpha: a band the imagery flags as alpha is the validity mask and not data (``mask``)
            or data and not a mask (``band``; GDAL flags band 4 of a 4-band uint8 GeoTIFF as
            alpha by default, NIR or not); ``auto`` is ``mask`` when the band holds only 0 and
            255, else ``band`` (:func:`geospade.raster.bands.resolve_alpha`).
        rgb: 1-based chip bands drawn as red, green, blue (default: from band names or colour
            interpretation, else bands 1-3; :func:`geospade.raster.bands.rgb_bands`); the store
            remembers them (manifest ``rgb``, 0-based).
        overwrite: replace an existing ``out``.
        quiet: no progress bar.

    Returns:
        A :class:`TileSummary`.
    """
    options = _Options(
        size=size, stride=size if stride is None else stride, max_nodata=max_nodata, aoi=aoi,
        val_fraction=val_fraction, test_fraction=test_fraction, block=block, workers=workers,
        seed=seed, unknown=unknown, resampling=resampling, compress=compress, quiet=quiet,
        bands=None if bands is None else tuple(bands), alpha=alpha,
        rgb=None if rgb is None else tuple(rgb),
    )
    options.check()
    out = Path(out)
    inputs = [("the land cover", landcover), ("the imagery", imagery), ("the AOI file", aoi)]
    if isinstance(scheme, (str, Path)) and Path(scheme).is_file():
        inputs.append(("the scheme file", scheme))
    check_not_an_input(out, inputs, hint="write the chip store to a new folder")
    check_replaceable(out, CHIP_STORE, overwrite)
    pairs = raster_pairs(landcover, imagery)
    with OutputLock(out, "chip store"), warnings.catch_warnings():
        # Rasters without georeferencing are taken on purpose (pixel-aligned pairs; the summary
        # says so), so rasterio's warning about each of them is noise.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return _tile(pairs, out, load_scheme(scheme), options)


@dataclass(frozen=True)
class _Options:
    """The options of one :func:`tile` run, as the user gave them (``stride`` resolved)."""

    size: int
    stride: int
    max_nodata: float
    aoi: str | Path | None
    val_fraction: float
    test_fraction: float
    block: int
    workers: int
    seed: int
    unknown: str
    resampling: str
    compress: str
    quiet: bool
    bands: tuple[int, ...] | None = None
    alpha: str = "auto"
    rgb: tuple[int, ...] | None = None

    def check(self) -> None:
        """Refuse a value no run can use, before anything is opened."""
        check_seed(self.seed)
        if self.size <= 0:
            raise ArgumentError("size", f"must be a positive number of pixels, not {self.size}")
        if self.stride <= 0:
            raise ArgumentError(
                "stride", f"must be a positive number of pixels, not {self.stride}")
        if not 0.0 <= self.max_nodata <= 1.0:
            raise ArgumentError(
                "max_nodata", f"must be a fraction in [0, 1], not {self.max_nodata}")
        if self.block is not None and self.block <= 0:
            raise ArgumentError("block", f"must be a positive number of chips, not {self.block}")
        if self.workers <= 0:
            raise ArgumentError("workers", f"must be at least 1, not {self.workers}")
        if self.unknown not in ("error", "ignore"):
            raise ArgumentError("unknown", f"must be 'error' or 'ignore', not {self.unknown!r}")
        if self.resampling not in RESAMPLING:
            raise ArgumentError("resampling", f"must be one of {', '.join(RESAMPLING)}, "
                                              f"not {self.resampling!r}")
        check_codec(self.compress)
        check_fractions(self.val_fraction, self.test_fraction)
        if self.alpha not in ALPHA_CHOICES:
            raise ArgumentError(
                "alpha", f"must be one of {', '.join(ALPHA_CHOICES)}, not {self.alpha!r}")
        if self.rgb is not None and len(self.rgb) != 3:
            raise ArgumentError(
                "rgb", f"takes three band numbers (red, green, blue), not {len(self.rgb)}")

    @property
    def held_out(self) -> bool:
        """Whether val or test chips were asked for (only then do split blocks matter)."""
        return self.val_fraction > 0 or self.test_fraction > 0

    def to_manifest(self, scheme: ClassScheme, block: int) -> dict[str, Any]:
        """The manifest's ``options``, with the split block side used (``block_auto``: chosen
        by tiling)."""
        return {
            "scheme": scheme.name, "size": self.size, "stride": self.stride,
            "max_nodata": self.max_nodata,
            "aoi": None if self.aoi is None else str(Path(self.aoi).resolve()),
            "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
            "block": block, "block_auto": self.block is None, "workers": self.workers,
            "seed": self.seed, "unknown": self.unknown, "resampling": self.resampling,
            "compress": self.compress,
            "bands": None if self.bands is None else list(self.bands), "alpha": self.alpha,
            "rgb": None if self.rgb is None else list(self.rgb),
        }


def _tile(pairs: list[RasterPair], out: Path, scheme: ClassScheme,
          options: _Options) -> TileSummary:
    """The steps of :func:`tile`, once its options are checked and ``out`` is locked."""
    sources = [_scan_sources(pair, options) for pair in pairs]
    _check_alike(sources)
    block, grids = _split_blocks(sources, options)
    aoi = _load_aoi(options.aoi, sources[0].grid) if options.aoi is not None else None
    plans = [_plan_chips(src, options, block, grid, aoi)
             for src, grid in zip(sources, grids, strict=True)]
    planned = {k: sum(p.dropped[k] for p in plans) for k in plans[0].dropped}
    if not any(p.chips for p in plans):
        raise GeospadeError(f"no chips to write: {_dropped_text({'nodata': 0, **planned})}")
    prepare_folder(out.parent)  # before any pixel is read: errors name out's folder
    with chip_store.new_store(out) as store:
        jobs = tuple(_job(src, store, scheme, options) for src in sources)
        with _Runner(options.workers, jobs) as run:
            _check_label_values(run, sources, scheme, options.unknown)
            totals = _cut_chips(run, plans, store, scheme, sources[0].grid.crs, options)
        dropped = {"nodata": totals.dropped_nodata, **planned}
        if not totals.written:
            raise GeospadeError(f"no chips to write: {_dropped_text(dropped)}")
        bands = _band_stats(sources[0].band_names, sources[0].image_dtype,
                            sources[0].image_nodata, totals.samples)
        manifest = _manifest(sources, plans, scheme, options, block, totals, dropped, bands)
        chip_store.write_manifest(store / chip_store.MANIFEST, manifest)
    first = sources[0]
    return TileSummary(
        out=out, counts=totals.counts, dropped=dropped, class_pixels=totals.class_pixels,
        class_names=scheme.names, warped=any(s.alignment.warped for s in sources),
        bands=bands, block=block if options.held_out else None,
        block_auto=options.block is None, georeferenced=first.grid.crs is not None,
        alpha=first.bands.describe_alpha(), rgb=first.rgb_bands, pairs=len(pairs),
    )


# -- scan: what the two rasters are -------------------------------------------------------------


@dataclass(frozen=True)
class _Sources:
    """What tiling needs of one land cover and its imagery, read before any pixel.

    Attributes:
        pair: the two files.
        grid: the land cover's grid (the reference).
        alignment: the imagery's overlap with it, and whether it is warped.
        facts: the manifest's ``sources``.
        label_nodata, label_dtype: the land cover's nodata value and dtype.
        label_block_rows: rows of one land-cover block (the label scan reads whole blocks).
        image_nodata, image_dtype: the imagery's.
        bands: the imagery bands kept as chip bands, and the band that is the validity mask.
        descriptions: the kept bands' descriptions.
        use_dataset_mask: the imagery's validity comes from its dataset mask (an internal
            mask, not alpha).
        band_names: the kept bands' descriptions, ``bandN`` (source band N) where there is none.
        rgb: the first three kept bands are red, green, blue (by colour or by name): the chips
            say so in their photometric tag.
        rgb_bands: the kept bands drawn as red, green, blue.
    """

    pair: RasterPair
    grid: Grid
    alignment: Alignment
    facts: dict[str, dict[str, Any]]
    label_nodata: float | None
    label_dtype: str
    label_block_rows: int
    image_nodata: float | None
    image_dtype: str
    bands: BandChoice
    descriptions: tuple[str | None, ...]
    use_dataset_mask: bool
    band_names: list[str]
    rgb: bool
    rgb_bands: RGBBands

    @property
    def image_count(self) -> int:
        return len(self.bands.indexes)


def _scan_sources(pair: RasterPair, options: _Options) -> _Sources:
    """Open both rasters, check they can be tiled together and note what tiling needs."""
    landcover, imagery = pair.landcover, pair.imagery
    with open_raster(landcover, "land cover") as lab, open_raster(
            imagery, "imagery", onto=lab, resampling=options.resampling) as img:
        if lab.count != 1:
            raise GeospadeError(
                f"land cover must have one band, {Path(landcover).name} has {lab.count}"
            )
        if same_file(landcover, imagery):
            raise GeospadeError(f"the land cover and the imagery are the same file ({imagery}); "
                                "give the imagery of the same ground as the second argument")
        alignment = align(lab, img)
        alpha = resolve_alpha(img, options.alpha)
        bands = choose_bands(img.colorinterp, options.bands, alpha)
        if options.alpha == "auto":
            bands = replace(bands, auto=True)
        kept = [b - 1 for b in bands.indexes]
        descriptions = tuple(img.descriptions[i] for i in kept)
        colorinterp = [img.colorinterp[i] for i in kept]
        band_names = [descriptions[k] or f"band{i + 1}" for k, i in enumerate(kept)]
        rgb = [c.name for c in colorinterp[:3]] == ["red", "green", "blue"] or [
            n.lower() for n in band_names[:3]
        ] == ["red", "green", "blue"]
        return _Sources(
            pair=pair,
            grid=Grid(crs=lab.crs, transform=lab.transform, width=lab.width, height=lab.height),
            alignment=alignment,
            facts={"landcover": _source_facts(lab, landcover),
                   "imagery": _source_facts(img, imagery)},
            label_nodata=lab.nodata, label_dtype=lab.dtypes[0],
            label_block_rows=lab.block_shapes[0][0],
            image_nodata=img.nodata, image_dtype=img.dtypes[kept[0]], bands=bands,
            descriptions=descriptions,
            use_dataset_mask=(img.nodata is None and bands.flagged_alpha is None
                              and MaskFlags.per_dataset in img.mask_flag_enums[0]),
            band_names=band_names, rgb=rgb,
            rgb_bands=rgb_bands(descriptions, colorinterp, options.rgb),
        )


def _check_alike(sources: list[_Sources]) -> None:
    """Pairs of one store share its CRS, chip bands and band statistics: refuse a folder whose
    pairs differ in them, naming the first pair that does."""
    first = sources[0]

    def bands_of(s: _Sources) -> tuple:
        return (s.image_count, s.image_dtype, nodata_to_json(s.image_nodata), s.band_names,
                s.bands)

    for other in sources[1:]:
        if not same_crs(first.grid.crs, other.grid.crs):
            raise GeospadeError(f"land cover {other.pair.landcover.name} is not in the CRS of "
                                f"{first.pair.landcover.name}: one chip store has one CRS")
        if bands_of(other) != bands_of(first):
            raise GeospadeError(
                f"imagery {other.pair.imagery.name} has other bands than "
                f"{first.pair.imagery.name} ({other.image_count} x {other.image_dtype} "
                f"vs {first.image_count} x {first.image_dtype}, or other names, nodata or "
                "alpha): one chip store has one set of bands"
            )


def _source_facts(ds: rasterio.io.DatasetReader, path: str | Path) -> dict[str, Any]:
    return {
        **source_record(path),  # "path" (the spec, absolute) and "files" (every file read)
        "crs": ds.crs.to_wkt() if ds.crs else None,
        "transform": list(ds.transform)[:6],
        "width": ds.width,
        "height": ds.height,
        "dtype": ds.dtypes[0],
        "count": ds.count,
        "nodata": nodata_to_json(ds.nodata),  # strict JSON, also for a NaN nodata
    }


# -- plan: which chips, in which split ----------------------------------------------------------


@dataclass(frozen=True)
class _ChipPlan:
    """The chip windows of the overlap and the split of each one kept.

    Attributes:
        area: the overlap, on the land-cover grid.
        rows, cols: chip offsets on the land-cover grid.
        chips: split of each kept chip, by ``(row, col)``.
        dropped: chips left out by the plan, per reason (``outside_aoi``, ``straddles_split``).
    """

    area: Window
    rows: list[int]
    cols: list[int]
    chips: dict[tuple[int, int], str]
    dropped: dict[str, int]


def _split_blocks(sources: list[_Sources], options: _Options) -> tuple[int, list[np.ndarray]]:
    """The split block side (``--block``, or chosen) and each pair's grid of block splits.

    Refuses a chip larger than an area first: no block size helps then.
    """
    size = options.size
    for src in sources:
        area = src.alignment.window
        if size > area.height or size > area.width:
            where = f" of {src.pair.landcover.name}" if src.pair.stem is not None else ""
            raise GeospadeError(
                f"chip size {size} is larger than the area to tile{where} "
                f"({area.width} x {area.height} px of land cover overlapping the imagery)"
            )
    areas = [(s.alignment.window.height, s.alignment.window.width) for s in sources]
    block = options.block or largest_block(areas, options.stride, options.val_fraction,
                                           options.test_fraction)
    shapes = [block_grid(h, w, block * options.stride) for h, w in areas]
    # A folder's pairs share one assignment, so the fractions hold over all their blocks.
    grids = assign_block_grids(shapes, options.val_fraction, options.test_fraction,
                               options.seed)
    return block, grids


def _plan_chips(sources: _Sources, options: _Options, block: int, blocks: np.ndarray,
                aoi: Any) -> _ChipPlan:
    """Lay chips over the overlap, drop those outside the AOI or straddling two splits.

    Args:
        block: side of a split block in chip steps; ``blocks`` is the split of each block.
        aoi: the AOI's geometry on the land-cover grid's CRS, or None.
    """
    area, size, stride = sources.alignment.window, options.size, options.stride
    rows = [area.row_off + r for r in chip_offsets(area.height, size, stride)]
    cols = [area.col_off + c for c in chip_offsets(area.width, size, stride)]
    block_pixels = block * stride
    hits = _aoi_hits(aoi, rows, cols, size, sources.grid.transform)
    dropped = {"outside_aoi": 0, "straddles_split": 0}
    chips: dict[tuple[int, int], str] = {}
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            if hits is not None and not hits[i, j]:
                dropped["outside_aoi"] += 1
                continue
            split = chip_split(row - area.row_off, col - area.col_off, size, block_pixels, blocks)
            if split is None:
                dropped["straddles_split"] += 1
                continue
            chips[(row, col)] = chip_store.SPLITS[split]
    return _ChipPlan(area=area, rows=rows, cols=cols, chips=chips, dropped=dropped)


def _load_aoi(aoi: str | Path, grid: Grid) -> Any:
    """The union of the AOI's geometries, in the CRS of the land cover's ``grid``."""
    from shapely import union_all

    if grid.crs is None:
        raise ArgumentError("aoi", "needs georeferenced rasters: the land cover has no CRS")
    frame = read_vector(aoi, "AOI", grid.crs, onto="the land cover")
    if frame.empty:
        raise GeospadeError(f"AOI {Path(aoi)} has no geometries")
    return union_all(frame.geometry.values)


def _aoi_hits(geometry: Any, rows: list[int], cols: list[int], size: int,
              transform: rasterio.Affine) -> np.ndarray | None:
    """Whether each chip window ``(row, col)`` intersects ``geometry`` (None: no AOI)."""
    if geometry is None:
        return None
    import shapely

    boxes = []
    for row in rows:
        for col in cols:
            bounds = rasterio.windows.bounds(Window(col, row, size, size), transform)
            boxes.append(shapely.box(*bounds))
    hits = shapely.intersects(geometry, np.array(boxes, dtype=object))
    return np.asarray(hits, dtype=bool).reshape(len(rows), len(cols))


def _dropped_text(dropped: dict[str, int]) -> str:
    parts = [f"{n} {_DROP_TEXT[k]}" for k, n in dropped.items() if n]
    return "all chips dropped (" + ", ".join(parts) + ")" if parts else "no chip windows"


def _spans(start: int, length: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(s + step, start + length)) for s in range(start, start + length, step)]


def _tasks(plan: _ChipPlan, size: int) -> list[ReadTask]:
    """Read tasks: groups of planned chips whose union window is read once."""
    tasks = []
    for row_group in group_offsets(plan.rows, size, TASK_ROWS):
        for col_group in group_offsets(plan.cols, size, TASK_COLS):
            chips = tuple(
                PlannedChip(r, c, plan.chips[(r, c)])
                for r in row_group
                for c in col_group
                if (r, c) in plan.chips
            )
            if not chips:
                continue
            r0 = min(c.row for c in chips)
            c0 = min(c.col for c in chips)
            r1 = max(c.row for c in chips) + size
            c1 = max(c.col for c in chips) + size
            tasks.append(ReadTask(Window(c0, r0, c1 - c0, r1 - r0), chips))
    return tasks


# -- the store's temporary folder ---------------------------------------------------------------


# -- check the labels, cut the chips ------------------------------------------------------------


def _job(sources: _Sources, store: Path, scheme: ClassScheme, options: _Options) -> TileJob:
    bands = sources.bands
    return TileJob(
        landcover=str(sources.pair.landcover), imagery=str(sources.pair.imagery), store=store,
        grid=sources.grid, offset=sources.alignment.offset, resampling=options.resampling,
        scheme=scheme, label_nodata=sources.label_nodata, image_nodata=sources.image_nodata,
        use_dataset_mask=sources.use_dataset_mask, image_count=sources.image_count,
        image_dtype=sources.image_dtype, descriptions=sources.descriptions, rgb=sources.rgb,
        size=options.size, max_nodata=options.max_nodata, compress=options.compress,
        seed=options.seed, bands=bands.indexes, mask_band=bands.mask_band,
        alpha_as_data=bands.flagged_alpha is not None and bands.mask_band is None,
        id_prefix="" if sources.pair.stem is None else f"{sources.pair.stem}_",
    )


def _check_label_values(run: _Map, sources: list[_Sources], scheme: ClassScheme,
                        unknown: str) -> None:
    """Count every raw label value of each overlap, before any chip is written: unknown values
    are reported with their pixel counts (summed over a folder's pairs)."""
    scan = [(i, window) for i, src in enumerate(sources) for window in _scan_windows(src)]
    values: list[dict[float, int]] = [{} for _ in sources]
    for (i, _), part in zip(scan, run(_count_values, scan), strict=True):
        for v, n in part.items():
            values[i][v] = values[i].get(v, 0) + n
    unknown_values: dict[float, int] = {}
    labelled = False
    for src, counts in zip(sources, values, strict=True):
        if not counts:
            continue
        raw = np.array(list(counts))
        known = np.isin(raw, scheme.values)
        # Each pair's own nodata value says which raw values are unlabelled.
        unlabelled = scheme.unlabelled_mask(raw, src.label_nodata)
        for v, k, u in zip(counts, known, unlabelled, strict=True):
            if not (k or u):
                unknown_values[v] = unknown_values.get(v, 0) + counts[v]
        labelled = labelled or bool(known.any())
    if unknown_values and unknown == "error":
        raise UnknownClassValuesError(scheme, unknown_values)
    if not labelled:
        pair = sources[0].pair
        name = pair.landcover.name if pair.stem is None else f"folder {pair.landcover.parent}"
        raise GeospadeError(
            f"land cover {name} has no labelled pixels where it overlaps the imagery "
            f"(all nodata or unlabelled for scheme {scheme.name!r})"
        )


def _scan_windows(sources: _Sources) -> list[Window]:
    """Windows of whole land-cover blocks covering the overlap, for the label scan."""
    area = sources.alignment.window
    return [
        Window(c0, r0, c1 - c0, r1 - r0)
        for r0, r1 in _spans(area.row_off, area.height, max(sources.label_block_rows, 512) * 2)
        for c0, c1 in _spans(area.col_off, area.width, TASK_COLS)
    ]


class _Totals:
    """What the cut tasks wrote, added up: chips and class pixels per split, chips dropped for
    nodata, and the band-statistics sample (thinned to stay under ``SAMPLE_CAP`` pixels)."""

    def __init__(self, num_classes: int) -> None:
        self.counts = {s: 0 for s in chip_store.SPLITS}
        self.class_pixels = {s: [0] * num_classes for s in chip_store.SPLITS}
        self.dropped_nodata = 0
        self.samples: list[np.ndarray] = []
        self._sampled = 0

    @property
    def written(self) -> int:
        return sum(self.counts.values())

    def add(self, result: TaskResult) -> None:
        for record in result.chips:
            self.counts[record["split"]] += 1
            totals = self.class_pixels[record["split"]]
            for i, n in enumerate(record["class_pixels"]):
                totals[i] += n
        self.dropped_nodata += result.dropped_nodata
        if result.sample is not None:
            self.samples.append(result.sample)
            self._sampled += result.sample.shape[1]
            if self._sampled > SAMPLE_CAP:
                self.samples = [np.concatenate(self.samples, axis=1)[:, ::2]]
                self._sampled = self.samples[0].shape[1]


def _cut_chips(run: _Map, plans: list[_ChipPlan], store: Path, scheme: ClassScheme,
               crs: CRS | None, options: _Options) -> _Totals:
    """Cut the planned chips of every pair, one read task at a time, and write
    ``index.gpkg``."""
    # Records go to index.gpkg in batches, so memory does not grow with the chip count.
    index = chip_store.IndexWriter(store / chip_store.INDEX, scheme.names, crs,
                                   shown_as=final_name(store / chip_store.INDEX, store))
    totals = _Totals(scheme.num_classes)
    tasks = [(i, task) for i, plan in enumerate(plans) for task in _tasks(plan, options.size)]
    with _progress(sum(len(p.chips) for p in plans), options.quiet) as bar:
        for result in run(cut_task, tasks):
            totals.add(result)
            index.add(result.chips)
            bar.update(result.planned)
    index.close()
    return totals


def _progress(total: int, quiet: bool) -> Progress:
    return progress(total=total, desc="tiling", unit="chip", quiet=quiet, logger="tile")


# -- the worker pool ----------------------------------------------------------------------------
#
# A pool hands work to its processes as pickles of (function, item), and a function pickles by
# its module and name; a worker's open datasets and GDAL environment cannot be pickled at all.
# So the pool's initializer hands each process the run's jobs (one per land-cover/imagery
# pair), kept in the slots below, and the pool calls the module-level functions _count_values
# and cut_task with (job index, item). A process keeps one TileWorker open, for the job of its
# last item: a folder's pairs come one after another, so it reopens rasters once per pair.
# With workers == 1 the same functions run in this process.

_JOBS: tuple[TileJob, ...] = ()
_WORKER: TileWorker | None = None

_Map = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


def _start_worker(jobs: tuple[TileJob, ...]) -> None:
    global _JOBS
    _JOBS = jobs
    # A spawned process does not inherit the parent's warning filters (see tile()).
    warnings.simplefilter("ignore", NotGeoreferencedWarning)


def _stop_worker() -> None:
    global _WORKER, _JOBS
    if _WORKER is not None:
        _WORKER.close()
        _WORKER = None
    _JOBS = ()


def _worker(i: int) -> TileWorker:
    """This process's TileWorker for job ``i``, opened (and the previous one closed) on the
    first item of that job."""
    global _WORKER
    if _WORKER is None or _WORKER.job is not _JOBS[i]:
        if _WORKER is not None:
            _WORKER.close()
            _WORKER = None
        _WORKER = TileWorker(_JOBS[i])
    return _WORKER


def _count_values(item: tuple[int, Window]) -> dict[float, int]:
    return _worker(item[0]).count_values(item[1])


def cut_task(item: tuple[int, ReadTask]) -> TaskResult:
    """Cut one read task of pair ``item[0]`` in this process's worker (the pool's entry)."""
    return _worker(item[0]).cut(item[1])


class _Runner:
    """Runs a function over items in this process (``workers == 1``) or a process pool."""

    def __init__(self, workers: int, jobs: tuple[TileJob, ...]):
        self.workers = workers
        self.jobs = jobs
        self.pool = None

    def __enter__(self) -> _Map:
        if self.workers == 1:
            _start_worker(self.jobs)
            return lambda fn, items: map(fn, items)
        # fork starts fast and inherits the imports; workers open their own datasets.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        self.pool = ctx.Pool(self.workers, initializer=_start_worker, initargs=(self.jobs,))
        return lambda fn, items: self.pool.imap(fn, items)

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            if exc[0] is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
        else:
            _stop_worker()


# -- the manifest -------------------------------------------------------------------------------


def _manifest(sources: list[_Sources], plans: list[_ChipPlan], scheme: ClassScheme,
              options: _Options, block: int, totals: _Totals, dropped: dict[str, int],
              bands: list[BandStats]) -> dict[str, Any]:
    """The store's ``manifest.json`` (docs/design.md, "Chip store")."""
    from geospade import __version__

    first = sources[0]
    return {
        "format": chip_store.FORMAT,
        "format_version": chip_store.FORMAT_VERSION,
        "geospade_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scheme": scheme.to_dict(),
        "ignore_index": IGNORE_INDEX,
        "class_fraction_columns": chip_store.class_fraction_columns(scheme.names),
        "chip_size": options.size,
        "stride": options.stride,
        "bands": [b.to_dict() for b in bands],
        "rgb": list(first.rgb_bands.indices),
        "crs": first.grid.crs.to_wkt() if first.grid.crs is not None else None,
        "counts": totals.counts,
        "class_pixels": totals.class_pixels,
        **_manifest_sources(sources, plans),
        "warped": any(s.alignment.warped for s in sources),
        "label_dtype": first.label_dtype,
        "options": options.to_manifest(scheme, block),
        "dropped": dropped,
    }


def _manifest_sources(sources: list[_Sources], plans: list[_ChipPlan]) -> dict[str, Any]:
    """The manifest's ``sources`` and ``area``: of the one pair, or, for two folders, the
    folders with each pair's files and area under ``sources["pairs"]`` (``area`` null)."""

    def area(plan: _ChipPlan) -> dict[str, int]:
        a = plan.area
        return {"row_off": a.row_off, "col_off": a.col_off, "width": a.width, "height": a.height}

    first = sources[0]
    if first.pair.stem is None:
        return {"sources": first.facts, "area": area(plans[0])}
    folders = {
        role: {"path": str(getattr(first.pair, role).parent.resolve()), "files": len(sources)}
        for role in ("landcover", "imagery")
    }
    pairs = {src.pair.stem: {**src.facts, "area": area(plan), "warped": src.alignment.warped}
             for src, plan in zip(sources, plans, strict=True)}
    return {"sources": {**folders, "pairs": pairs}, "area": None}


def _band_stats(names, dtype: str, nodata, samples) -> list[BandStats]:
    """Per-band normalisation: uint8 0..255, else the 2nd/98th percentiles of the sample;
    mean and std (informational) from the sample of valid pixels of the kept chips.

    Every number is finite (the manifest is strict JSON): pixels with a non-finite band are
    left out of the sample (:func:`geospade.raster.tiling_worker.finite_pixels` already masks
    them), and a mean or std that overflows float64 is None.
    """
    fixed = fixed_range(dtype)
    sample = np.concatenate(samples, axis=1).astype(np.float64) if samples else None
    if sample is not None:
        sample = sample[:, np.isfinite(sample).all(axis=0)]
    has_sample = sample is not None and sample.shape[1] > 0
    bands = []
    for b, name in enumerate(names):
        mean = _finite(sample[b].mean()) if has_sample else None
        std = _finite(sample[b].std()) if has_sample else None
        if fixed is not None:
            low, high = fixed
        elif has_sample:
            low, high = (float(x) for x in np.percentile(sample[b], [2, 98]))
            if not (math.isfinite(low) and math.isfinite(high)):  # interpolation overflowed
                low, high = (float(x) for x in np.percentile(sample[b], [2, 98],
                                                             method="nearest"))
        else:
            low, high = 0.0, 1.0
        bands.append(BandStats(name=name, dtype=dtype, low=low, high=high, mean=mean, std=std,
                               nodata=None if nodata is None else float(nodata)))
    return bands


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
