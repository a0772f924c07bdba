"""`geospade tile`: cut a land-cover raster and its imagery into aligned mask/image chips.

How the work is split (docs/design.md, "Tile I/O"; ``benchmarks/bench_tile.py`` has the
numbers): chips are grouped into read tasks of about ``TASK_ROWS`` x ``TASK_COLS`` pixels; a
task reads its land-cover and imagery window once (so a source block is decoded once per task,
not once per chip) and cuts all its chips from memory. Memory per worker is therefore a few task
windows, whatever the raster size. Tasks run in a process pool with ``workers > 1``; what a
worker does is :mod:`geospade.raster.tiling_worker`.

:func:`tile` runs these steps: scan the two rasters, plan the chips and their split, check every
label value, cut the chips (writing ``index.gpkg`` as they come), write the manifest, and move
the store into place. The store is built in a hidden temporary folder next to ``out`` and
renamed into place after the manifest is written, so a failed or interrupted run leaves nothing
that looks complete.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from geospade.errors import GeospadeError, check_seed, writing
from geospade.formats import chip_store
from geospade.normalization import BandStats, fixed_range, nodata_to_json
from geospade.outputs import (
    CHIP_STORE,
    OutputLock,
    check_not_an_input,
    check_replaceable,
    prepare_folder,
    same_file,
)
from geospade.raster.alignment import RESAMPLING, Alignment, align, open_raster
from geospade.raster.codecs import check_codec
from geospade.raster.grid import Grid
from geospade.raster.tiling_worker import (
    PlannedChip,
    ReadTask,
    TaskResult,
    TileJob,
    TileWorker,
    final_name,
)
from geospade.raster.windows import assign_blocks, chip_offsets, chip_split, group_offsets
from geospade.schemes import IGNORE_INDEX, ClassScheme, UnknownClassValuesError, load_scheme
from geospade.vectors import read_vector

TASK_ROWS = 1024
TASK_COLS = 2048
SAMPLE_CAP = 1_000_000  # most sample pixels per band kept in memory
INDEX_BATCH = 4096  # chip records written to index.gpkg at a time


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
    """

    out: Path
    counts: dict[str, int]
    dropped: dict[str, int]
    class_pixels: dict[str, list[int]]
    class_names: list[str]
    warped: bool = False
    bands: list[BandStats] = field(default_factory=list)

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
        if self.warped:
            lines.append("  imagery was warped onto the land-cover grid")
        return "\n".join(lines)


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
    block: int = 8,
    workers: int = 1,
    seed: int = 0,
    unknown: str = "error",
    resampling: str = "bilinear",
    compress: str = "none",
    overwrite: bool = False,
    quiet: bool = False,
) -> TileSummary:
    """Cut a land-cover raster and its imagery into aligned chips (the chip store of
    docs/design.md, "Chip store").

    Args:
        landcover: single-band land-cover raster (integer, or float with integral values); its
            grid is the reference.
        imagery: imagery raster; warped onto the land-cover grid if its CRS, resolution or
            pixel offset differ.
        out: the chip store folder to create.
        scheme: class scheme name (``chesapeake7``, ``chesapeake13``, ``nlcd``), JSON file or
            :class:`ClassScheme`.
        size: chip size in pixels.
        stride: step between chips (default ``size``; smaller means overlapping chips).
        max_nodata: largest fraction of nodata/unlabelled pixels a kept chip may have.
        aoi: vector file (any CRS); chips not intersecting its geometries are dropped.
        val_fraction, test_fraction: fractions of split blocks sent to val and test.
        block: side of a split block, in chip steps.
        workers: processes cutting chips.
        seed: seed of the split and of the stats sample.
        unknown: ``error`` on label values outside the scheme, or ``ignore`` (map them to 255).
        resampling: ``bilinear`` or ``cubic``, for warped imagery only.
        compress: chip compression: ``none`` (fastest, see ``benchmarks/bench_tile.py``),
            ``zstd`` (level 1), ``lzw`` or ``deflate`` (level 1).
        overwrite: replace an existing ``out``.
        quiet: no progress bar.

    Returns:
        A :class:`TileSummary`.
    """
    options = _Options(
        size=size, stride=size if stride is None else stride, max_nodata=max_nodata, aoi=aoi,
        val_fraction=val_fraction, test_fraction=test_fraction, block=block, workers=workers,
        seed=seed, unknown=unknown, resampling=resampling, compress=compress, quiet=quiet,
    )
    options.check()
    out = Path(out)
    inputs = [("the land cover", landcover), ("the imagery", imagery), ("the AOI file", aoi)]
    if isinstance(scheme, (str, Path)) and Path(scheme).is_file():
        inputs.append(("the scheme file", scheme))
    check_not_an_input(out, inputs, hint="write the chip store to a new folder")
    check_replaceable(out, CHIP_STORE, overwrite)
    with OutputLock(out, "chip store"):
        return _tile(landcover, imagery, out, load_scheme(scheme), options)


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

    def check(self) -> None:
        """Refuse a value no run can use, before anything is opened."""
        check_seed(self.seed)
        if self.size <= 0:
            raise GeospadeError(f"--size must be a positive number of pixels, not {self.size}")
        if self.stride <= 0:
            raise GeospadeError(
                f"--stride must be a positive number of pixels, not {self.stride}")
        if not 0.0 <= self.max_nodata <= 1.0:
            raise GeospadeError(
                f"--max-nodata must be a fraction in [0, 1], not {self.max_nodata}")
        if self.block <= 0:
            raise GeospadeError(f"--block must be a positive number of chips, not {self.block}")
        if self.workers <= 0:
            raise GeospadeError(f"--workers must be at least 1, not {self.workers}")
        if self.unknown not in ("error", "ignore"):
            raise GeospadeError(f"--unknown must be 'error' or 'ignore', not {self.unknown!r}")
        if self.resampling not in RESAMPLING:
            raise GeospadeError(f"--resampling must be one of {', '.join(RESAMPLING)}, "
                                f"not {self.resampling!r}")
        check_codec(self.compress)

    def to_manifest(self, scheme: ClassScheme) -> dict[str, Any]:
        """The manifest's ``options``."""
        return {
            "scheme": scheme.name, "size": self.size, "stride": self.stride,
            "max_nodata": self.max_nodata,
            "aoi": None if self.aoi is None else str(Path(self.aoi).resolve()),
            "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
            "block": self.block, "workers": self.workers, "seed": self.seed,
            "unknown": self.unknown, "resampling": self.resampling, "compress": self.compress,
        }


def _tile(landcover: str | Path, imagery: str | Path, out: Path, scheme: ClassScheme,
          options: _Options) -> TileSummary:
    """The steps of :func:`tile`, once its options are checked and ``out`` is locked."""
    sources = _scan_sources(landcover, imagery)
    plan = _plan_chips(sources, scheme, options)
    store = _start_store(out)
    try:
        job = _job(landcover, imagery, store, sources, scheme, options)
        with _Runner(options.workers, job) as run:
            _check_label_values(run, sources, scheme, options.unknown, landcover)
            totals = _cut_chips(run, plan, store, scheme, sources.grid.crs, options)
        dropped = {"nodata": totals.dropped_nodata, **plan.dropped}
        if not totals.written:
            raise GeospadeError(f"no chips to write: {_dropped_text(dropped)}")
        bands = _band_stats(sources.band_names, sources.image_dtype, sources.image_nodata,
                            totals.samples)
        manifest = _manifest(sources, scheme, options, totals, dropped, bands)
        chip_store.write_manifest(store / chip_store.MANIFEST, manifest)
        _swap_in_new_folder(store, out)
    except BaseException:
        shutil.rmtree(store, ignore_errors=True)
        raise
    return TileSummary(
        out=out, counts=totals.counts, dropped=dropped, class_pixels=totals.class_pixels,
        class_names=scheme.names, warped=sources.alignment.warped, bands=bands,
    )


# -- scan: what the two rasters are -------------------------------------------------------------


@dataclass(frozen=True)
class _Sources:
    """What tiling needs of the land cover and the imagery, read before any pixel.

    Attributes:
        grid: the land cover's grid (the reference).
        alignment: the imagery's overlap with it, and whether it is warped.
        facts: the manifest's ``sources``.
        label_nodata, label_dtype: the land cover's nodata value and dtype.
        label_block_rows: rows of one land-cover block (the label scan reads whole blocks).
        image_nodata, image_dtype, image_count, descriptions: the imagery's.
        use_dataset_mask: the imagery's validity comes from its dataset mask.
        band_names: band descriptions, ``bandN`` where there is none.
        rgb: the first three bands are red, green, blue (by colour or by name).
    """

    grid: Grid
    alignment: Alignment
    facts: dict[str, dict[str, Any]]
    label_nodata: float | None
    label_dtype: str
    label_block_rows: int
    image_nodata: float | None
    image_dtype: str
    image_count: int
    descriptions: tuple[str | None, ...]
    use_dataset_mask: bool
    band_names: list[str]
    rgb: bool


def _scan_sources(landcover: str | Path, imagery: str | Path) -> _Sources:
    """Open both rasters, check they can be tiled together and note what tiling needs."""
    with open_raster(landcover, "land cover") as lab, open_raster(imagery, "imagery") as img:
        if lab.count != 1:
            raise GeospadeError(
                f"land cover must have one band, {Path(landcover).name} has {lab.count}"
            )
        if same_file(landcover, imagery):
            raise GeospadeError(f"the land cover and the imagery are the same file ({imagery}); "
                                "give the imagery of the same ground as the second argument")
        alignment = align(lab, img)
        band_names = [d or f"band{i + 1}" for i, d in enumerate(img.descriptions)]
        rgb = [c.name for c in img.colorinterp[:3]] == ["red", "green", "blue"] or [
            n.lower() for n in band_names[:3]
        ] == ["red", "green", "blue"]
        return _Sources(
            grid=Grid(crs=lab.crs, transform=lab.transform, width=lab.width, height=lab.height),
            alignment=alignment,
            facts={"landcover": _source_facts(lab, landcover),
                   "imagery": _source_facts(img, imagery)},
            label_nodata=lab.nodata, label_dtype=lab.dtypes[0],
            label_block_rows=lab.block_shapes[0][0],
            image_nodata=img.nodata, image_dtype=img.dtypes[0], image_count=img.count,
            descriptions=tuple(img.descriptions),
            use_dataset_mask=(img.nodata is None
                              and MaskFlags.per_dataset in img.mask_flag_enums[0]),
            band_names=band_names, rgb=rgb,
        )


def _source_facts(ds: rasterio.io.DatasetReader, path: str | Path) -> dict[str, Any]:
    return {
        "path": str(Path(path).resolve()),
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


def _plan_chips(sources: _Sources, scheme: ClassScheme, options: _Options) -> _ChipPlan:
    """Lay chips over the overlap, drop those outside the AOI or straddling two splits."""
    area, size, stride = sources.alignment.window, options.size, options.stride
    if size > area.height or size > area.width:
        raise GeospadeError(
            f"chip size {size} is larger than the area to tile "
            f"({area.width} x {area.height} px of land cover overlapping the imagery)"
        )
    rows = [area.row_off + r for r in chip_offsets(area.height, size, stride)]
    cols = [area.col_off + c for c in chip_offsets(area.width, size, stride)]
    block_pixels = options.block * stride
    blocks = assign_blocks(
        math.ceil(area.height / block_pixels), math.ceil(area.width / block_pixels),
        options.val_fraction, options.test_fraction, options.seed,
    )
    aoi = _load_aoi(options.aoi, sources.grid.crs) if options.aoi is not None else None
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
    if not chips:
        raise GeospadeError(f"no chips to write: {_dropped_text({'nodata': 0, **dropped})}")
    return _ChipPlan(area=area, rows=rows, cols=cols, chips=chips, dropped=dropped)


def _load_aoi(aoi: str | Path, crs: CRS | None) -> Any:
    """The union of the AOI's geometries, in the land cover's CRS ``crs``."""
    from shapely import union_all

    frame = read_vector(aoi, "AOI", crs, onto="the land cover")
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


def _start_store(out: Path) -> Path:
    """Create the store's temporary folder beside ``out``, with its chip folders.

    Before any pixel is read: an error names the folder of ``out``, not the temporary name.
    """
    store = prepare_folder(out.parent) / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        (store / chip_store.IMAGES).mkdir(parents=True)
        (store / chip_store.MASKS).mkdir()
    except OSError as exc:
        shutil.rmtree(store, ignore_errors=True)
        raise GeospadeError(f"cannot write the chip store in {out.parent}: "
                            f"{exc.strerror}") from None
    return store


def _swap_in_new_folder(new: Path, out: Path) -> None:
    """Rename the finished store ``new`` to ``out``; an old store there (checked replaceable)
    is renamed aside first and removed only once the new one is in place."""
    old = None
    if out.exists() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.partial-old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
    os.replace(new, out)  # onto a missing or empty folder
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- check the labels, cut the chips ------------------------------------------------------------


def _job(landcover: str | Path, imagery: str | Path, store: Path, sources: _Sources,
         scheme: ClassScheme, options: _Options) -> TileJob:
    return TileJob(
        landcover=str(landcover), imagery=str(imagery), store=store, grid=sources.grid,
        offset=sources.alignment.offset, resampling=options.resampling, scheme=scheme,
        label_nodata=sources.label_nodata, image_nodata=sources.image_nodata,
        use_dataset_mask=sources.use_dataset_mask, image_count=sources.image_count,
        image_dtype=sources.image_dtype, descriptions=sources.descriptions, rgb=sources.rgb,
        size=options.size, max_nodata=options.max_nodata, compress=options.compress,
        seed=options.seed,
    )


def _check_label_values(run: _Map, sources: _Sources, scheme: ClassScheme, unknown: str,
                        landcover: str | Path) -> None:
    """Count every raw label value of the overlap, before any chip is written: unknown values
    are reported with their pixel counts."""
    area = sources.alignment.window
    scan = [
        Window(c0, r0, c1 - c0, r1 - r0)
        for r0, r1 in _spans(area.row_off, area.height, max(sources.label_block_rows, 512) * 2)
        for c0, c1 in _spans(area.col_off, area.width, TASK_COLS)
    ]
    values: dict[float, int] = {}
    for part in run(_count_values, scan):
        for v, n in part.items():
            values[v] = values.get(v, 0) + n
    _check_values(values, scheme, sources.label_nodata, unknown, landcover)


def _check_values(values: dict[float, int], scheme: ClassScheme, file_nodata: float | None,
                  unknown: str, path: str | Path) -> None:
    if not values:
        return
    raw = np.array(list(values))
    known = np.isin(raw, scheme.values)
    unlabelled = scheme.unlabelled_mask(raw, file_nodata)
    unknown_values = {v: values[v] for v, k, u in zip(values, known, unlabelled, strict=True)
                      if not (k or u)}
    if unknown_values and unknown == "error":
        raise UnknownClassValuesError(scheme, unknown_values)
    if not known.any():
        raise GeospadeError(
            f"land cover {Path(path).name} has no labelled pixels where it overlaps the imagery "
            f"(all nodata or unlabelled for scheme {scheme.name!r})"
        )


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


def _cut_chips(run: _Map, plan: _ChipPlan, store: Path, scheme: ClassScheme, crs: CRS,
               options: _Options) -> _Totals:
    """Cut the planned chips, one read task at a time, and write ``index.gpkg``."""
    # Records go to index.gpkg in batches, so memory does not grow with the chip count.
    index = _IndexWriter(store / chip_store.INDEX, scheme.num_classes, crs)
    totals = _Totals(scheme.num_classes)
    with _progress(len(plan.chips), options.quiet) as bar:
        for result in run(_cut_task, _tasks(plan, options.size)):
            totals.add(result)
            index.add(result.chips)
            bar.update(result.planned)
    index.close()
    return totals


class _IndexWriter:
    """Appends chip records to ``index.gpkg`` in batches."""

    def __init__(self, path: Path, num_classes: int, crs: CRS):
        self.path, self.num_classes, self.crs = path, num_classes, crs
        self.pending: list[dict] = []
        self.rows = 0

    def add(self, records: list[dict]) -> None:
        self.pending.extend(records)
        if len(self.pending) >= INDEX_BATCH:
            self._flush()

    def close(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self.pending:
            with writing(final_name(self.path, self.path.parent)):
                chip_store.write_index(self.path, self.pending, self.num_classes, self.crs,
                                       append=self.rows > 0)
            self.rows += len(self.pending)
            self.pending = []


def _progress(total: int, quiet: bool):
    from tqdm import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(total=total, unit="chip", desc="tiling", disable=disable, file=sys.stderr)


# -- the worker pool ----------------------------------------------------------------------------
#
# A pool hands work to its processes as pickles of (function, item), and a function pickles by
# its module and name; a worker's open datasets and GDAL environment cannot be pickled at all.
# So the pool's initializer builds each process's one TileWorker and keeps it in the slot
# below, and the pool calls the module-level functions _count_values and _cut_task, which hand
# the item to that worker. With workers == 1 the same functions run in this process.

_WORKER: TileWorker | None = None

_Map = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


def _start_worker(job: TileJob) -> None:
    global _WORKER
    _WORKER = TileWorker(job)


def _stop_worker() -> None:
    global _WORKER
    if _WORKER is not None:
        _WORKER.close()
        _WORKER = None


def _count_values(window: Window) -> dict[float, int]:
    return _WORKER.count_values(window)


def _cut_task(task: ReadTask) -> TaskResult:
    return _WORKER.cut(task)


class _Runner:
    """Runs a function over items in this process (``workers == 1``) or a process pool."""

    def __init__(self, workers: int, job: TileJob):
        self.workers = workers
        self.job = job
        self.pool = None

    def __enter__(self) -> _Map:
        if self.workers == 1:
            _start_worker(self.job)
            return lambda fn, items: map(fn, items)
        # fork starts fast and inherits the imports; workers open their own datasets.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        self.pool = ctx.Pool(self.workers, initializer=_start_worker, initargs=(self.job,))
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


def _manifest(sources: _Sources, scheme: ClassScheme, options: _Options, totals: _Totals,
              dropped: dict[str, int], bands: list[BandStats]) -> dict[str, Any]:
    """The store's ``manifest.json`` (docs/design.md, "Chip store")."""
    from geospade import __version__

    area = sources.alignment.window
    return {
        "format": chip_store.FORMAT,
        "format_version": chip_store.FORMAT_VERSION,
        "geospade_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scheme": scheme.to_dict(),
        "ignore_index": IGNORE_INDEX,
        "chip_size": options.size,
        "stride": options.stride,
        "bands": [b.to_dict() for b in bands],
        "counts": totals.counts,
        "class_pixels": totals.class_pixels,
        "sources": sources.facts,
        "warped": sources.alignment.warped,
        "area": {"row_off": area.row_off, "col_off": area.col_off,
                 "width": area.width, "height": area.height},
        "label_dtype": sources.label_dtype,
        "options": options.to_manifest(scheme),
        "dropped": dropped,
    }


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
