"""`geospade tile`: cut a land-cover raster and its imagery into aligned mask/image chips.

How the work is split (see ``benchmarks/bench_tile.py`` for the numbers): chips are grouped into
read tasks of about ``TASK_ROWS`` x ``TASK_COLS`` pixels; a task reads its land-cover and imagery
window once (so a source block is decoded once per task, not once per chip) and cuts all its chips
from memory. Memory per worker is therefore a few task windows, whatever the raster size. Tasks
run in a process pool with ``workers > 1``.

The store is built in a hidden temporary folder next to ``out`` and renamed into place after the
manifest is written, so a failed or interrupted run leaves nothing that looks complete.
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

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from geospade.errors import GeospadeError, check_seed, reading, writing
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
from geospade.raster.alignment import RESAMPLING, align, imagery_valid, open_raster, warped_imagery
from geospade.raster.codecs import check_codec
from geospade.raster.windows import SPLITS, assign_blocks, chip_offsets, chip_split, group_offsets
from geospade.schemes import IGNORE_INDEX, ClassScheme, UnknownClassValuesError, load_scheme

TASK_ROWS = 1024
TASK_COLS = 2048
SAMPLE_PER_CHIP = 64  # random pixels per chip kept for the band statistics
SAMPLE_CAP = 1_000_000  # most sample pixels per band kept in memory
INDEX_BATCH = 4096  # chip records written to index.gpkg at a time
GDAL_CACHE_MB = 64  # per process: windows are read once, a large block cache only costs memory


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
    """Cut a land-cover raster and its imagery into aligned chips (the chip store of DESIGN.md).

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
    stride = size if stride is None else stride
    _check_options(size, stride, max_nodata, block, workers, unknown, resampling, compress,
                   seed)
    out = Path(out)
    inputs = [("the land cover", landcover), ("the imagery", imagery), ("the AOI file", aoi)]
    if isinstance(scheme, (str, Path)) and Path(scheme).is_file():
        inputs.append(("the scheme file", scheme))
    check_not_an_input(out, inputs, hint="write the chip store to a new folder")
    check_replaceable(out, CHIP_STORE, overwrite)
    with OutputLock(out, "chip store"):
        return _tile(landcover, imagery, out, load_scheme(scheme), size, stride, max_nodata, aoi,
                     val_fraction, test_fraction, block, workers, seed, unknown, resampling,
                     compress, quiet)


def _tile(landcover, imagery, out: Path, scheme: ClassScheme, size: int, stride: int,
          max_nodata: float, aoi, val_fraction: float, test_fraction: float, block: int,
          workers: int, seed: int, unknown: str, resampling: str, compress: str, quiet: bool
          ) -> TileSummary:

    with open_raster(landcover, "land cover") as lab, open_raster(imagery, "imagery") as img:
        if lab.count != 1:
            raise GeospadeError(
                f"land cover must have one band, {Path(landcover).name} has {lab.count}"
            )
        if same_file(landcover, imagery):
            raise GeospadeError(f"the land cover and the imagery are the same file ({imagery}); "
                                "give the imagery of the same ground as the second argument")
        alignment = align(lab, img)
        grid = {
            "crs": lab.crs, "transform": lab.transform, "width": lab.width, "height": lab.height
        }
        sources = {
            "landcover": _source_facts(lab, landcover), "imagery": _source_facts(img, imagery)
        }
        label_nodata = lab.nodata
        image_nodata = img.nodata
        use_dataset_mask = image_nodata is None and MaskFlags.per_dataset in img.mask_flag_enums[0]
        band_names = [d or f"band{i + 1}" for i, d in enumerate(img.descriptions)]
        rgb = [c.name for c in img.colorinterp[:3]] == ["red", "green", "blue"] or [
            n.lower() for n in band_names[:3]
        ] == ["red", "green", "blue"]
        image_count = img.count
        descriptions = list(img.descriptions)
        image_dtype = img.dtypes[0]
        label_dtype = lab.dtypes[0]
        label_block_rows = lab.block_shapes[0][0]

    area = alignment.window
    if size > area.height or size > area.width:
        raise GeospadeError(
            f"chip size {size} is larger than the area to tile "
            f"({area.width} x {area.height} px of land cover overlapping the imagery)"
        )

    row_offsets = [area.row_off + r for r in chip_offsets(area.height, size, stride)]
    col_offsets = [area.col_off + c for c in chip_offsets(area.width, size, stride)]

    block_pixels = block * stride
    blocks = assign_blocks(
        math.ceil(area.height / block_pixels), math.ceil(area.width / block_pixels),
        val_fraction, test_fraction, seed,
    )
    aoi_geometry = _load_aoi(aoi, grid["crs"]) if aoi is not None else None

    dropped = {"nodata": 0, "outside_aoi": 0, "straddles_split": 0}
    candidates: dict[tuple[int, int], str] = {}
    aoi_hits = _aoi_hits(aoi_geometry, row_offsets, col_offsets, size, grid["transform"])
    for i, row in enumerate(row_offsets):
        for j, col in enumerate(col_offsets):
            if aoi_hits is not None and not aoi_hits[i, j]:
                dropped["outside_aoi"] += 1
                continue
            split = chip_split(row - area.row_off, col - area.col_off, size, block_pixels, blocks)
            if split is None:
                dropped["straddles_split"] += 1
                continue
            candidates[(row, col)] = SPLITS[split]
    if not candidates:
        raise GeospadeError(f"no chips to write: {_dropped_text(dropped)}")

    config = {
        "landcover": str(landcover), "imagery": str(imagery), "grid": grid,
        "offset": alignment.offset, "resampling": resampling, "scheme": scheme.to_dict(),
        "unknown": unknown, "label_nodata": label_nodata, "image_nodata": image_nodata,
        "use_dataset_mask": use_dataset_mask, "max_nodata": max_nodata, "size": size,
        "compress": compress, "descriptions": descriptions, "seed": seed, "rgb": rgb,
        "image_count": image_count, "image_dtype": image_dtype,
    }

    # The store is built beside ``out`` under a temporary name: before reading any pixel, check
    # that its folder can be written (an error naming the folder, not the temporary name).
    tmp = prepare_folder(out.parent) / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    config["tmp"] = str(tmp)
    try:
        try:
            (tmp / chip_store.IMAGES).mkdir(parents=True)
            (tmp / chip_store.MASKS).mkdir()
        except OSError as exc:
            raise GeospadeError(f"cannot write the chip store in {out.parent}: "
                                f"{exc.strerror}") from None
        with _Runner(workers, config) as run:
            # 1. Check every label value of the area before writing anything.
            scan = [
                (r0, r1, c0, c1)
                for r0, r1 in _spans(area.row_off, area.height, max(label_block_rows, 512) * 2)
                for c0, c1 in _spans(area.col_off, area.width, TASK_COLS)
            ]
            values: dict[float, int] = {}
            for part in run(_count_values, scan):
                for v, n in part.items():
                    values[v] = values.get(v, 0) + n
            _check_values(values, scheme, label_nodata, unknown, landcover)

            # 2. Cut the chips, one read task at a time.
            tasks = _tasks(row_offsets, col_offsets, candidates, size)
            # Records go to index.gpkg in batches, so memory does not grow with the chip count.
            index = _IndexWriter(tmp / chip_store.INDEX, scheme.num_classes, grid["crs"])
            counts = {s: 0 for s in SPLITS}
            class_pixels = {s: [0] * scheme.num_classes for s in SPLITS}
            samples, sampled = [], 0
            with _progress(len(candidates), quiet) as bar:
                for result in run(_cut_task, tasks):
                    for r in result["chips"]:
                        counts[r["split"]] += 1
                        totals = class_pixels[r["split"]]
                        for i, n in enumerate(r["class_pixels"]):
                            totals[i] += n
                    index.add(result["chips"])
                    dropped["nodata"] += result["dropped_nodata"]
                    if result["sample"] is not None:
                        samples.append(result["sample"])
                        sampled += result["sample"].shape[1]
                        if sampled > SAMPLE_CAP:
                            samples = [np.concatenate(samples, axis=1)[:, ::2]]
                            sampled = samples[0].shape[1]
                    bar.update(result["n"])
            index.close()
        if not index.rows:
            raise GeospadeError(f"no chips to write: {_dropped_text(dropped)}")
        bands = _band_stats(band_names, image_dtype, image_nodata, samples)
        from geospade import __version__

        manifest = {
            "format": chip_store.FORMAT,
            "format_version": chip_store.FORMAT_VERSION,
            "geospade_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "scheme": scheme.to_dict(),
            "ignore_index": IGNORE_INDEX,
            "chip_size": size,
            "stride": stride,
            "bands": [b.to_dict() for b in bands],
            "counts": counts,
            "class_pixels": class_pixels,
            "sources": sources,
            "warped": alignment.warped,
            "area": {"row_off": area.row_off, "col_off": area.col_off,
                     "width": area.width, "height": area.height},
            "label_dtype": label_dtype,
            "options": {
                "scheme": scheme.name, "size": size, "stride": stride, "max_nodata": max_nodata,
                "aoi": None if aoi is None else str(Path(aoi).resolve()),
                "val_fraction": val_fraction, "test_fraction": test_fraction, "block": block,
                "workers": workers, "seed": seed, "unknown": unknown, "resampling": resampling,
                "compress": compress,
            },
            "dropped": dropped,
        }
        chip_store.write_manifest(tmp / chip_store.MANIFEST, manifest)
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TileSummary(
        out=out, counts=counts, dropped=dropped, class_pixels=class_pixels,
        class_names=scheme.names, warped=alignment.warped, bands=bands,
    )


def _replace_folder(new: Path, out: Path) -> None:
    """Move the finished store ``new`` to ``out``; an old store there (checked replaceable) is
    moved aside first and removed only once the new one is in place."""
    old = None
    if out.exists() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.partial-old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
    os.replace(new, out)  # onto a missing or empty folder
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- checks -------------------------------------------------------------------------------------


def _check_options(size, stride, max_nodata, block, workers, unknown, resampling, compress,
                   seed) -> None:
    check_seed(seed)
    if size <= 0:
        raise GeospadeError(f"--size must be a positive number of pixels, not {size}")
    if stride <= 0:
        raise GeospadeError(f"--stride must be a positive number of pixels, not {stride}")
    if not 0.0 <= max_nodata <= 1.0:
        raise GeospadeError(f"--max-nodata must be a fraction in [0, 1], not {max_nodata}")
    if block <= 0:
        raise GeospadeError(f"--block must be a positive number of chips, not {block}")
    if workers <= 0:
        raise GeospadeError(f"--workers must be at least 1, not {workers}")
    if unknown not in ("error", "ignore"):
        raise GeospadeError(f"--unknown must be 'error' or 'ignore', not {unknown!r}")
    if resampling not in RESAMPLING:
        raise GeospadeError(
            f"--resampling must be one of {', '.join(RESAMPLING)}, not {resampling!r}"
        )
    check_codec(compress)


def _check_values(values: dict, scheme: ClassScheme, file_nodata, unknown: str, path) -> None:
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


def _source_facts(ds, path) -> dict:
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


def _dropped_text(dropped: dict[str, int]) -> str:
    parts = [f"{n} {_DROP_TEXT[k]}" for k, n in dropped.items() if n]
    return "all chips dropped (" + ", ".join(parts) + ")" if parts else "no chip windows"


def _load_aoi(aoi, crs: CRS):
    import geopandas as gpd
    from shapely import union_all

    path = Path(aoi)
    if not path.exists():
        raise GeospadeError(f"AOI file not found: {path}")
    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise GeospadeError(f"cannot read AOI {path}: {' '.join(str(exc).split())}") from None
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise GeospadeError(f"AOI {path} has no geometries")
    if frame.crs is None:
        raise GeospadeError(f"AOI {path} has no CRS; set one (e.g. ogr2ogr -a_srs) so it can "
                            "be placed on the land cover")
    if crs is None:
        raise GeospadeError("the land cover has no CRS, so --aoi cannot be placed on it")
    frame = frame.to_crs(crs.to_wkt())
    return union_all(frame.geometry.values)


def _aoi_hits(geometry, rows: list[int], cols: list[int], size: int, transform):
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


# -- work split ---------------------------------------------------------------------------------


def _spans(start: int, length: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(s + step, start + length)) for s in range(start, start + length, step)]


def _tasks(rows: list[int], cols: list[int], candidates: dict, size: int) -> list[dict]:
    """Read tasks: groups of chips whose union window is read once."""
    tasks = []
    for row_group in group_offsets(rows, size, TASK_ROWS):
        for col_group in group_offsets(cols, size, TASK_COLS):
            chips = [
                (r, c, candidates[(r, c)])
                for r in row_group
                for c in col_group
                if (r, c) in candidates
            ]
            if not chips:
                continue
            r0 = min(r for r, _, _ in chips)
            c0 = min(c for _, c, _ in chips)
            r1 = max(r for r, _, _ in chips) + size
            c1 = max(c for _, c, _ in chips) + size
            tasks.append({"window": (r0, r1, c0, c1), "chips": chips})
    return tasks


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
            with writing(_store_name(self.path, self.path.parent)):
                chip_store.write_index(self.path, self.pending, self.num_classes, self.crs,
                                       append=self.rows > 0)
            self.rows += len(self.pending)
            self.pending = []


class _Runner:
    """Runs a function over items in this process (``workers == 1``) or a process pool."""

    def __init__(self, workers: int, config: dict):
        self.workers = workers
        self.config = config
        self.pool = None

    def __enter__(self) -> Callable[[Callable, Iterable], Iterator]:
        if self.workers == 1:
            _init_worker(self.config)
            return lambda fn, items: map(fn, items)
        # fork starts fast and inherits the imports; workers open their own datasets.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        self.pool = ctx.Pool(self.workers, initializer=_init_worker, initargs=(self.config,))
        return lambda fn, items: self.pool.imap(fn, items)

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            if exc[0] is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
        else:
            _close_worker()


def _progress(total: int, quiet: bool):
    from tqdm import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(total=total, unit="chip", desc="tiling", disable=disable, file=sys.stderr)


# -- worker side --------------------------------------------------------------------------------

_STATE: dict = {}
_NAN = float("nan")


def _init_worker(config: dict) -> None:
    env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024)
    env.__enter__()
    labels = rasterio.open(config["landcover"])
    imagery = rasterio.open(config["imagery"])
    reader, alpha = imagery, None
    if config["offset"] is None:
        reader, alpha = warped_imagery(imagery, config["grid"], config["resampling"])
    scheme = ClassScheme.from_dict(config["scheme"])
    crs, compress = config["grid"]["crs"], config["compress"]
    image_writer = chip_store.ChipWriter(
        chip_store.image_profile(config["image_count"], config["image_dtype"], crs,
                                 config["image_nodata"], config["rgb"], compress),
        descriptions=config["descriptions"],
    )
    mask_writer = chip_store.ChipWriter(
        chip_store.mask_profile(crs, compress), colormap=scheme.colormap()
    )
    _STATE.update(
        config=config, env=env, labels=labels, imagery=imagery, reader=reader, alpha=alpha,
        scheme=scheme, image_writer=image_writer, mask_writer=mask_writer,
    )


def _close_worker() -> None:
    if not _STATE:
        return
    if _STATE["reader"] is not _STATE["imagery"]:
        _STATE["reader"].close()
    _STATE["imagery"].close()
    _STATE["labels"].close()
    _STATE["env"].__exit__(None, None, None)
    _STATE.clear()


def _count_values(span: tuple[int, int, int, int]) -> dict[float, int]:
    """Pixel count of each raw label value in a window (rows r0..r1, cols c0..c1)."""
    r0, r1, c0, c1 = span
    with reading(_STATE["config"]["landcover"], "land cover"):
        raw = _STATE["labels"].read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
    if raw.dtype.kind in "ui" and raw.dtype.itemsize <= 2:
        low = 0 if raw.dtype.kind == "u" else int(raw.min())
        counts = np.bincount((raw if low == 0 else raw.astype(np.int32) - low).ravel())
        nz = np.flatnonzero(counts)
        return {int(v + low): int(counts[v]) for v in nz}
    vals, counts = np.unique(raw, return_counts=True)  # NaNs collapse into one value
    out: dict[float, int] = {}
    for v, n in zip(vals.tolist(), counts.tolist(), strict=True):
        # One NaN object, so counts from different windows add up under the same key.
        out[_NAN if v != v else v] = out.get(_NAN if v != v else v, 0) + n
    return out


def _read_imagery(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Imagery on the label grid for rows r0..r1, cols c0..c1, and where it is valid (None: all)."""
    config, reader = _STATE["config"], _STATE["reader"]
    if config["offset"] is not None:
        dr, dc = config["offset"]
        window = Window(c0 + dc, r0 + dr, c1 - c0, r1 - r0)
        image = reader.read(window=window)
        if config["use_dataset_mask"]:
            return image, reader.dataset_mask(window=window) > 0
        if config["image_nodata"] is None:
            return image, None
        return image, imagery_valid(image, config["image_nodata"])
    data = reader.read(window=Window(c0, r0, c1 - c0, r1 - r0))
    count = config["image_count"]
    valid = data[_STATE["alpha"] - 1] > 0
    image = data[:count]
    if config["image_nodata"] is not None:
        valid &= imagery_valid(image, config["image_nodata"])
    return image, valid


def _cut_task(task: dict) -> dict:
    """Read one task's windows once and write all its chips; return their records."""
    config, scheme = _STATE["config"], _STATE["scheme"]
    r0, r1, c0, c1 = task["window"]
    size = config["size"]
    transform = config["grid"]["transform"]
    with reading(config["landcover"], "land cover"):
        raw = _STATE["labels"].read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
    masks = scheme.encode(raw, config["label_nodata"], unknown="ignore")
    with reading(config["imagery"], "imagery"):
        image, valid = _read_imagery(r0, r1, c0, c1)
    valid = _finite_pixels(image, valid, config["image_nodata"])
    if valid is not None:
        masks[~valid] = IGNORE_INDEX
    tmp = Path(config["tmp"])
    sample = []
    chips, dropped = [], 0
    k = scheme.num_classes
    # One stderr capture for the task's chips (writing() costs ~10 µs, a chip ~300 µs);
    # switch() names the chip being written.
    with writing(_store_name(tmp / chip_store.IMAGES, tmp)) as target:
        for row, col, split in task["chips"]:
            i, j = row - r0, col - c0
            mask = masks[i : i + size, j : j + size]
            hist = np.bincount(mask.ravel(), minlength=256)
            labelled = int(hist[:k].sum())
            nodata_fraction = 1.0 - labelled / mask.size
            if nodata_fraction > config["max_nodata"] + 1e-12:
                dropped += 1
                continue
            chip = image[:, i : i + size, j : j + size]
            cid = chip_store.chip_id(row, col)
            window = Window(col, row, size, size)
            chip_transform = rasterio.windows.transform(window, transform)
            image_rel = f"{chip_store.IMAGES}/{cid}.tif"
            mask_rel = f"{chip_store.MASKS}/{cid}.tif"
            target.switch(_store_name(tmp / image_rel, tmp))
            _STATE["image_writer"].write(tmp / image_rel, chip, chip_transform)
            target.switch(_store_name(tmp / mask_rel, tmp))
            _STATE["mask_writer"].write(tmp / mask_rel, mask, chip_transform)
            # A few random pixels per chip (seeded by its position, so any worker draws the same)
            # give the band statistics without touching every pixel again.
            rng = np.random.default_rng([config["seed"], row, col])
            rr, cc = rng.integers(0, size, size=(2, SAMPLE_PER_CHIP))
            if valid is not None:
                keep = valid[i + rr, j + cc]
                rr, cc = rr[keep], cc[keep]
            sample.append(chip[:, rr, cc])
            chips.append({
                "id": cid, "split": split, "row_off": row, "col_off": col, "width": size,
                "height": size, "nodata_fraction": nodata_fraction,
                "class_fractions": (hist[:k] / mask.size).tolist(),
                "class_pixels": hist[:k].tolist(),
                "image": image_rel, "mask": mask_rel,
                "bounds": rasterio.windows.bounds(window, transform),
            })
    return {
        "chips": chips, "dropped_nodata": dropped, "n": len(task["chips"]),
        "sample": np.concatenate(sample, axis=1) if sample else None,
    }


def _store_name(path: Path, tmp: Path) -> Path:
    """The name ``path``, written in the store's temporary folder ``tmp``
    (``.NAME.partial-XXXXXXXX``), will have in the finished store: the name errors give."""
    return tmp.parent / tmp.name[1:].rsplit(".partial-", 1)[0] / path.relative_to(tmp)


def _finite_pixels(image: np.ndarray, valid: np.ndarray | None,
                   nodata: float | None) -> np.ndarray | None:
    """``valid`` (None: all) less the pixels with a NaN or infinite value in any band.

    Non-finite values are never data (issue 16): they would turn the band stats, and every
    normalised chip, into NaN. Where the imagery has a nodata value, the whole pixel is set to
    it in ``image`` (in place), so the chips written say "nodata" there too.
    """
    if image.dtype.kind != "f":
        return valid
    finite = np.isfinite(image).all(axis=0)
    if finite.all():
        return valid
    if nodata is not None:
        image[:, ~finite] = nodata
    return finite if valid is None else valid & finite


def _band_stats(names, dtype: str, nodata, samples) -> list[BandStats]:
    """Per-band normalisation: uint8 0..255, else the 2nd/98th percentiles of the sample;
    mean and std (informational) from the sample of valid pixels of the kept chips.

    Every number is finite (the manifest is strict JSON): pixels with a non-finite band are
    left out of the sample (:func:`_cut_task` already masks them), and a mean or std that
    overflows float64 is None.
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
