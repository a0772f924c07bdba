"""The worker side of `geospade tile`: one process's open rasters, cutting read tasks into chips.

:func:`geospade.raster.tiling.tile` plans the work as :class:`ReadTask` values and a
:class:`TileJob` (what every task shares); a :class:`TileWorker` (one per process) opens the land
cover and the imagery once, reads each task's window once and writes its chips into the store's
temporary folder, returning a :class:`TaskResult`. See docs/design.md, "Tile I/O".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geospade.formats import chip_store
from geospade.io_errors import WriteTarget, reading, writing
from geospade.provenance import chip_tags
from geospade.raster.alignment import imagery_valid, open_raster, warped_imagery
from geospade.raster.bands import alpha_as_data
from geospade.raster.gdal_env import limited_cache
from geospade.raster.grid import Grid
from geospade.schemes import IGNORE_INDEX, ClassScheme

SAMPLE_PER_CHIP = 64  # random pixels per chip kept for the band statistics
_NAN = float("nan")


@dataclass(frozen=True)
class TileJob:
    """What every worker needs, the same for all read tasks of one run.

    Attributes:
        landcover, imagery: the source rasters.
        store: the store's temporary folder (``.OUT.partial-XXXXXXXX``) chips are written to.
        grid: the land cover's grid; chips take its CRS and their window's transform.
        offset: :attr:`geospade.raster.alignment.Alignment.offset`; None: warp the imagery.
        resampling: ``bilinear`` or ``cubic``, for warped imagery.
        scheme: the class scheme masks are encoded with.
        label_nodata, image_nodata: the sources' nodata values.
        use_dataset_mask: the imagery's validity comes from its dataset mask (no nodata value).
        image_count, image_dtype, descriptions, rgb: the chip bands, for the image chips.
        size: chip size in pixels.
        max_nodata: largest nodata fraction of a kept chip.
        compress: chip codec.
        seed: seed of the band-statistics sample.
        bands: 1-based imagery bands read as the chip bands, in order (None: all of them).
        mask_band: 1-based imagery band read as the validity mask (valid where > 0), or None.
        alpha_as_data: the imagery flags a band as alpha that is kept as data: warp it as data
            (:func:`geospade.raster.bands.alpha_as_data`).
        id_prefix: put before each chip id (a folder pair's ``STEM_``).
    """

    landcover: str
    imagery: str
    store: Path
    grid: Grid
    offset: tuple[int, int] | None
    resampling: str
    scheme: ClassScheme
    label_nodata: float | None
    image_nodata: float | None
    use_dataset_mask: bool
    image_count: int
    image_dtype: str
    descriptions: tuple[str | None, ...]
    rgb: bool
    size: int
    max_nodata: float
    compress: str
    seed: int
    bands: tuple[int, ...] | None = None
    mask_band: int | None = None
    alpha_as_data: bool = False
    id_prefix: str = ""


@dataclass(frozen=True)
class PlannedChip:
    """A chip to cut: its offset on the land-cover grid and its split."""

    row: int
    col: int
    split: str


@dataclass(frozen=True)
class ReadTask:
    """Chips whose union ``window`` (on the land-cover grid) is read once."""

    window: Window
    chips: tuple[PlannedChip, ...]


@dataclass(frozen=True)
class TaskResult:
    """What one read task wrote.

    Attributes:
        chips: index records of the chips written (:func:`geospade.formats.chip_store.write_index`).
        dropped_nodata: chips over ``max_nodata``, not written.
        planned: chips the task was given, written or not.
        sample: a few valid pixels per written chip ``(bands, n)``, for the band statistics;
            None when no chip was written.
    """

    chips: list[dict]
    dropped_nodata: int
    planned: int
    sample: np.ndarray | None


def final_name(path: Path, store: Path) -> Path:
    """The name ``path``, written in the store's temporary folder ``store``
    (``.NAME.partial-XXXXXXXX``), will have in the finished store: the name errors give."""
    return store.parent / store.name[1:].rsplit(".partial-", 1)[0] / path.relative_to(store)


class TileWorker:
    """One process's open land cover and imagery (on the label grid) and chip writers.

    Used as a context manager, or closed with :meth:`close`.

    Args:
        job: what the run's tasks share.
    """

    def __init__(self, job: TileJob) -> None:
        self.job = job
        self._open = contextlib.ExitStack()
        try:
            # A small block cache: every window is read once (geospade.raster.gdal_env).
            self._open.enter_context(limited_cache())
            self._labels = self._open.enter_context(open_raster(job.landcover, "land cover"))
            imagery = self._open.enter_context(open_raster(
                job.imagery, "imagery", onto=job.grid, resampling=job.resampling))
            self._imagery, self._alpha = imagery, None
            if job.offset is None:
                if job.alpha_as_data:  # else GDAL warps the band flagged alpha as alpha
                    imagery = self._open.enter_context(rasterio.open(alpha_as_data(imagery)))
                vrt, self._alpha = warped_imagery(imagery, job.grid, job.resampling)
                self._imagery = self._open.enter_context(vrt)
        except BaseException:
            self._open.close()
            raise
        crs = job.grid.crs
        tags = chip_tags(job.landcover, job.imagery)
        self._image_writer = chip_store.ChipWriter(
            chip_store.image_profile(job.image_count, job.image_dtype, crs, job.image_nodata,
                                     job.rgb, job.compress),
            descriptions=list(job.descriptions), tags=tags,
        )
        # Class names go in a side-car .aux.xml per mask chip, the one place QGIS reads them
        # from a GeoTIFF (about 1.2 ms a chip, measured against 6.3 ms for the whole chip).
        self._mask_writer = chip_store.ChipWriter(
            chip_store.mask_profile(crs, job.compress), colormap=job.scheme.colormap(),
            tags=tags, classes=chip_store.mask_classes(job.scheme),
        )

    def close(self) -> None:
        """Close the rasters and leave the GDAL environment."""
        self._open.close()

    def __enter__(self) -> TileWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count_values(self, window: Window) -> dict[float, int]:
        """Pixel count of each raw label value in ``window`` (all NaNs under one key)."""
        with reading(self.job.landcover, "land cover"):
            raw = self._labels.read(1, window=window)
        if raw.dtype.kind in "ui" and raw.dtype.itemsize <= 2:
            low = 0 if raw.dtype.kind == "u" else int(raw.min())
            counts = np.bincount((raw if low == 0 else raw.astype(np.int32) - low).ravel())
            nz = np.flatnonzero(counts)
            return {int(v + low): int(counts[v]) for v in nz}
        vals, counts = np.unique(raw, return_counts=True)  # NaNs collapse into one value
        out: dict[float, int] = {}
        for v, n in zip(vals.tolist(), counts.tolist(), strict=True):
            # One NaN object, so counts from different windows add up under the same key.
            key = _NAN if v != v else v
            out[key] = out.get(key, 0) + n
        return out

    def cut(self, task: ReadTask) -> TaskResult:
        """Read the task's window once and write all its chips that pass ``max_nodata``."""
        job = self.job
        with reading(job.landcover, "land cover"):
            raw = self._labels.read(1, window=task.window)
        masks = job.scheme.encode(raw, job.label_nodata, unknown="ignore")
        with reading(job.imagery, "imagery"):
            image, valid = self._read_imagery(task.window)
        valid = finite_pixels(image, valid, job.image_nodata)
        if valid is not None:
            masks[~valid] = IGNORE_INDEX
        records, samples = [], []
        # One stderr capture for the task's chips (writing() costs ~10 µs, a chip ~300 µs);
        # the chip writer switches the target to the chip it writes.
        with writing(final_name(job.store / chip_store.IMAGES, job.store)) as target:
            for chip in task.chips:
                i, j = chip.row - task.window.row_off, chip.col - task.window.col_off
                mask = masks[i : i + job.size, j : j + job.size]
                pixels = image[:, i : i + job.size, j : j + job.size]
                chip_valid = None if valid is None else valid[i : i + job.size, j : j + job.size]
                kept = self._write_chip(chip, mask, pixels, chip_valid, target)
                if kept is not None:
                    records.append(kept[0])
                    samples.append(kept[1])
        return TaskResult(
            chips=records, dropped_nodata=len(task.chips) - len(records),
            planned=len(task.chips),
            sample=np.concatenate(samples, axis=1) if samples else None,
        )

    def _write_chip(self, chip: PlannedChip, mask: np.ndarray, image: np.ndarray,
                    valid: np.ndarray | None, target: WriteTarget
                    ) -> tuple[dict, np.ndarray] | None:
        """Write one chip's image and mask unless it has too much nodata; return its index
        record and its band-statistics sample, or None when it was dropped."""
        job, k = self.job, self.job.scheme.num_classes
        hist = np.bincount(mask.ravel(), minlength=256)
        nodata_fraction = 1.0 - int(hist[:k].sum()) / mask.size
        if nodata_fraction > job.max_nodata + 1e-12:
            return None
        cid = job.id_prefix + chip_store.chip_id(chip.row, chip.col)
        window = Window(chip.col, chip.row, job.size, job.size)
        transform = rasterio.windows.transform(window, job.grid.transform)
        image_rel = f"{chip_store.IMAGES}/{cid}.tif"
        mask_rel = f"{chip_store.MASKS}/{cid}.tif"
        target.switch(final_name(job.store / image_rel, job.store))
        self._image_writer.write(job.store / image_rel, image, transform)
        target.switch(final_name(job.store / mask_rel, job.store))
        self._mask_writer.write(job.store / mask_rel, mask, transform)
        # A few random pixels per chip (seeded by its position, so any worker draws the same)
        # give the band statistics without touching every pixel again.
        rng = np.random.default_rng([job.seed, chip.row, chip.col])
        rr, cc = rng.integers(0, job.size, size=(2, SAMPLE_PER_CHIP))
        if valid is not None:
            keep = valid[rr, cc]
            rr, cc = rr[keep], cc[keep]
        record = {
            "id": cid, "split": chip.split, "row_off": chip.row, "col_off": chip.col,
            "width": job.size, "height": job.size, "nodata_fraction": nodata_fraction,
            "class_fractions": (hist[:k] / mask.size).tolist(),
            "class_pixels": hist[:k].tolist(),
            "image": image_rel, "mask": mask_rel,
            "bounds": _footprint(window, job.grid.transform),
        }
        return record, image[:, rr, cc]

    def _read_imagery(self, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """Imagery on the label grid in ``window`` of that grid, and where it is valid (None:
        everywhere)."""
        job = self.job
        bands = list(job.bands or range(1, job.image_count + 1))
        valid = None
        if job.offset is None:
            # The warped copy's alpha: the band the imagery flags alpha, or one GDAL added.
            data = self._imagery.read([*bands, self._alpha], window=window)
            image, valid = data[:-1], data[-1] > 0
        else:
            dr, dc = job.offset
            shifted = Window(window.col_off + dc, window.row_off + dr, window.width,
                             window.height)
            image = self._imagery.read(bands, window=shifted)
            if job.mask_band is not None:
                valid = self._imagery.read(job.mask_band, window=shifted) > 0
            elif job.use_dataset_mask:
                valid = self._imagery.dataset_mask(window=shifted) > 0
        if job.image_nodata is not None:
            has_data = imagery_valid(image, job.image_nodata)
            valid = has_data if valid is None else valid & has_data
        return image, valid


def _footprint(window: Window, transform: rasterio.Affine) -> tuple[float, ...]:
    """``(left, bottom, right, top)`` of ``window``, ordered even where y grows downwards (a
    raster without georeferencing has the identity transform: pixel columns and rows)."""
    left, bottom, right, top = rasterio.windows.bounds(window, transform)
    return min(left, right), min(bottom, top), max(left, right), max(bottom, top)


def finite_pixels(image: np.ndarray, valid: np.ndarray | None,
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
