"""The strip writer: a raster written top to bottom, in row strips, to a tiled GeoTIFF or COG.

Every compressed block is written exactly once, so memory is bounded by one block row, never by
the raster's size. The file is written under a hidden temporary name in the destination folder
and renamed when complete; a crash or interrupt deletes the temporary file, so nothing
complete-looking is left (docs/design.md, "Output GeoTIFF layout" and "Uncompressed
intermediate").
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp, Resampling
from rasterio.env import GDALVersion
from rasterio.io import MemoryFile
from rasterio.windows import Window

from geospade.atomic import atomic_path
from geospade.errors import ArgumentError, GeospadeError, first_line
from geospade.io_errors import captured_stderr, writing
from geospade.outputs import prepare_output
from geospade.raster.codecs import (
    CODECS,
    LOSSY_CODECS,
    OUTPUT_CODECS,
    check_codec,
    codec_options,
    cog_codec_options,
)
from geospade.raster.gdal_env import limited_cache
from geospade.raster.grid import Grid

DEFAULT_BLOCK_SIZE = 256
"""Internal tile size (pixels) of the GeoTIFFs the writer makes."""

# Creation options that other options set: one way to say each thing.
_RESERVED_OPTIONS = {"COMPRESS": "compress", "BLOCKXSIZE": "block_size",
                     "BLOCKYSIZE": "block_size", "BLOCKSIZE": "block_size",
                     "TILED": "block_size (outputs are always tiled)"}


def check_block_size(block_size: int) -> int:
    """``block_size`` if it is a positive multiple of 16 (what TIFF tiles must be), else a
    :class:`GeospadeError`."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise ArgumentError("block_size", f"{block_size} must be a positive multiple of 16",
                            flag="--blocksize")
    if block_size % 16:
        raise ArgumentError("block_size", f"{block_size} is not a multiple of 16",
                            flag="--blocksize")
    return block_size


def check_output_codec(compress: str, cog: bool = False, count: int | None = None,
                       dtype: str | None = None) -> str:
    """``compress`` if the writer can write it (for ``count`` bands of ``dtype``, when given).

    JPEG and WEBP are for 8-bit imagery with 3 bands: the lossy codecs of RGB photographs;
    pixels they alter near a nodata value would stop being nodata, so such a file keeps its
    no-data pixels in an internal mask instead.

    Raises:
        GeospadeError: an unknown codec, "none" for a COG, or a lossy codec for other
            imagery.
    """
    if compress not in LOSSY_CODECS:
        if compress not in CODECS:
            raise GeospadeError(f"unknown compression {compress!r}: use one of "
                                f"{', '.join(OUTPUT_CODECS)}")
        return check_codec(compress, cog)
    if count is not None and (count != 3 or np.dtype(dtype) != np.uint8):
        raise ArgumentError(
            "compress", f"{compress} is for 8-bit imagery with 3 bands; this output has "
            f"{count} {np.dtype(dtype).name} band(s): use deflate, zstd or lzw")
    return compress


def _lossy_options(compress: str) -> dict[str, str]:
    """rasterio creation options of a lossy codec (JPEG as YCbCr, GDAL's default for RGB
    photographs: about a third of the size of RGB JPEG)."""
    if compress == "jpeg":
        return {"compress": "jpeg", "photometric": "ycbcr", "interleave": "pixel"}
    return {"compress": "webp", "photometric": "rgb", "interleave": "pixel"}


def _codec_profile(compress: str, dtype: str) -> dict[str, Any]:
    """rasterio creation options of ``compress`` for ``dtype`` imagery."""
    if compress in LOSSY_CODECS:
        return _lossy_options(compress)
    return codec_options(compress, dtype)


def _cog_codec_options(compress: str, dtype: str) -> dict[str, str]:
    """The COG driver's options for ``compress`` (it makes JPEG YCbCr by itself)."""
    if compress in LOSSY_CODECS:
        return {"COMPRESS": compress.upper()}
    return cog_codec_options(compress, dtype)


def parse_creation_options(pairs: Sequence[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (``--co``, as rio takes them) as ``{"KEY": "VALUE"}``, keys in
    upper case.

    Raises:
        GeospadeError: a pair without ``=`` or with an empty key.
    """
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ArgumentError("creation_options", f"{pair!r} is not KEY=VALUE, e.g. "
                                "'ZLEVEL=6'", flag="--co",
                                others=[("e.g. 'ZLEVEL=6'", "e.g. --co ZLEVEL=6")])
        options[key.strip().upper()] = value.strip()
    return options


def check_creation_options(options: Mapping[str, str] | None, *, cog: bool, count: int,
                           dtype: str, compress: str = "deflate") -> dict[str, str]:
    """``options`` as GDAL creation options of the output, checked by GDAL itself.

    A tiny file is written in memory with the same codec and the options; an option the driver
    (GTiff, or COG with ``cog``) does not know, or a value it does not take, is an error here,
    before any work, rather than a warning GDAL prints while it ignores it.

    Args:
        options: ``{KEY: VALUE}`` (:func:`parse_creation_options`); None or empty: none.
        cog: the output is a COG (the COG driver's options) or a GeoTIFF (GTiff's).
        count, dtype: the output's bands.
        compress: the output's codec.

    Returns:
        The options, keys in upper case.

    Raises:
        GeospadeError: a reserved key (set with another option), an unknown key or a bad value.
    """
    options = {str(k).upper(): str(v) for k, v in (options or {}).items()}
    for key in options:
        if key in _RESERVED_OPTIONS:
            raise ArgumentError("creation_options", f"{key} is set with "
                                f"{_RESERVED_OPTIONS[key]}, not creation_options", flag="--co",
                                others=[("block_size", "--blocksize"), "compress",
                                        "creation_options"])
    if not options:
        return options
    failed = []
    with _gdal_warnings() as warned:
        try:
            _trial_write(options, cog, count, dtype, compress)
        except (rasterio.errors.RasterioError, CPLE_BaseError) as exc:
            failed.append(first_line(exc))
    # Warnings that name an option, and any failure, without the trial file's name.
    problems = [re.sub(r"^\S+\.tif: ", "", w) for w in
                [w for w in warned if any(k in w for k in options)] + failed]
    if problems:
        pairs = " ".join(f"{k}={v}" for k, v in options.items())
        driver = "COG" if cog else "GTiff"
        raise ArgumentError("creation_options", f"{pairs}: GDAL's {driver} driver says "
                            f"{problems[0]}", flag="--co")
    return options


def _trial_write(options: Mapping[str, str], cog: bool, count: int, dtype: str,
                 compress: str) -> None:
    """Write a 32 x 32 raster in memory with ``options`` over the writer's own (what
    :func:`check_creation_options` watches GDAL's complaints about)."""
    profile = {"driver": "GTiff", "width": 32, "height": 32, "count": count, "dtype": dtype,
               "tiled": True, "blockxsize": 16, "blockysize": 16, "crs": "EPSG:4326",
               "transform": rasterio.transform.from_origin(0, 32, 1, 1)}
    pixels = np.ones((count, 32, 32), dtype=dtype)
    with MemoryFile() as mem:
        if not cog:
            profile.update(_codec_profile(compress, dtype))
            profile.update({k.lower(): v for k, v in options.items()})
            with mem.open(**profile) as dst:
                dst.write(pixels)
            return
        with mem.open(**profile) as dst:
            dst.write(pixels)
        target = f"/vsimem/{secrets.token_hex(6)}.tif"
        try:
            rasterio.shutil.copy(mem.name, target, driver="COG", **{
                "BLOCKSIZE": "16", **_cog_codec_options(compress, dtype), **options})
        finally:
            with contextlib.suppress(Exception):
                rasterio.shutil.delete(target)


@contextlib.contextmanager
def _gdal_warnings() -> Iterator[list[str]]:
    """The messages of the GDAL warnings rasterio logs in the block."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            for code in ("CPLE_NotSupported in ", "CPLE_IllegalArg in ", "CPLE_AppDefined in "):
                text = text.replace(code, "")
            messages.append(text.strip())

    logger = logging.getLogger("rasterio._env")
    handler = Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# -- class names GIS software shows ----------------------------------------------------------
#
# A GeoTIFF holds a colour table but not class names: GDAL keeps category names and raster
# attribute tables (RAT) of a GeoTIFF in its side-car ``NAME.aux.xml`` (PAM), where QGIS (the
# legend of a paletted layer labels each colour with its category name), ArcGIS (the RAT) and
# gdalinfo read them. The XML below is what GDAL itself writes for GDALSetRasterCategoryNames
# and GDALSetDefaultRAT.

_RAT_INTEGER, _RAT_STRING = 0, 2  # GDALRATFieldType
_RAT_USAGE = {"Value": 5, "Class": 2, "Red": 6, "Green": 7, "Blue": 8, "Alpha": 9}
_CATEGORY_NAMES_LIMIT = 4096
"""Category names are a list indexed by pixel value: written only for values below this."""


class RasterClass(NamedTuple):
    """One class of a class raster: its pixel value, name and RGBA colour."""

    value: int
    name: str
    color: tuple[int, int, int, int]


def class_aux_xml(classes: Sequence[RasterClass], rat: bool = True) -> bytes:
    """GDAL's side-car XML (``.aux.xml``) naming the classes of band 1.

    Args:
        classes: the classes (values need not be contiguous).
        rat: also a thematic raster attribute table (value, class, red, green, blue, alpha).

    Returns:
        UTF-8 XML bytes.
    """
    band = ET.Element("PAMRasterBand", band="1")
    top = max((c.value for c in classes), default=-1)
    if 0 <= top < _CATEGORY_NAMES_LIMIT and min(c.value for c in classes) >= 0:
        names = [""] * (top + 1)
        for c in classes:
            names[c.value] = c.name
        listing = ET.SubElement(band, "CategoryNames")
        for name in names:
            ET.SubElement(listing, "Category").text = name
    if rat:
        table = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
        for i, (name, usage) in enumerate(_RAT_USAGE.items()):
            field = ET.SubElement(table, "FieldDefn", index=str(i))
            ET.SubElement(field, "Name").text = name
            ET.SubElement(field, "Type").text = str(_RAT_STRING if name == "Class"
                                                    else _RAT_INTEGER)
            ET.SubElement(field, "Usage").text = str(usage)
        for i, c in enumerate(classes):
            row = ET.SubElement(table, "Row", index=str(i))
            for value in (c.value, c.name, *c.color):
                ET.SubElement(row, "F").text = str(value)
    root = ET.Element("PAMDataset")
    root.append(band)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def aux_path(path: str | Path) -> Path:
    """The GDAL side-car of raster ``path``: ``path`` + ``.aux.xml``."""
    return Path(f"{path}.aux.xml")


def write_class_aux(path: str | Path, classes: Sequence[RasterClass], rat: bool = True) -> Path:
    """Write the side-car naming the classes of raster ``path`` (whole or not at all).

    Args:
        path: the raster.
        classes: its classes.
        rat: also a raster attribute table.

    Returns:
        The side-car's path.
    """
    target = aux_path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(class_aux_xml(classes, rat))
    return target


def read_category_names(path: str | Path) -> dict[int, str]:
    """The named categories of band 1 of raster ``path`` in its ``.aux.xml`` (``{value:
    name}``, unnamed values left out; empty when there is no side-car)."""
    try:
        root = ET.parse(aux_path(path)).getroot()
    except (OSError, ET.ParseError):
        return {}
    listing = root.find("./PAMRasterBand[@band='1']/CategoryNames")
    if listing is None:
        return {}
    names = [c.text or "" for c in listing.findall("Category")]
    return {i: n for i, n in enumerate(names) if n}


def overview_factors(width: int, height: int, block_size: int = DEFAULT_BLOCK_SIZE) -> list[int]:
    """Overview decimation factors 2, 4, 8 … until the overview fits in one block."""
    factors, f = [], 2
    while max(width, height) / (f // 2) > block_size:
        factors.append(f)
        f *= 2
    return factors


def default_colorinterp(descriptions: Sequence[str] | None, count: int) -> list[ColorInterp]:
    """RGB (then undefined) when the first three bands are red, green, blue; gray for one band;
    undefined otherwise."""
    names = [str(d).strip().lower() for d in (descriptions or [])]
    if count >= 3 and names[:3] in (["red", "green", "blue"], ["r", "g", "b"]):
        return [ColorInterp.red, ColorInterp.green, ColorInterp.blue] + (
            [ColorInterp.undefined] * (count - 3))
    if count == 1:
        return [ColorInterp.gray]
    return [ColorInterp.undefined] * count


def _temp_name(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{tag}")


def disk_has_room(path: Path, nbytes: int) -> bool:
    """Whether the file system of ``path``'s folder has ``nbytes`` free."""
    try:
        return shutil.disk_usage(path.parent if str(path.parent) else ".").free >= nbytes
    except OSError:
        return False


def _profile(grid: Grid, count: int, dtype: np.dtype, nodata: float | None, block_size: int,
             compress: str, options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Creation options of the file the rows are written to (``compress`` "none" for a raw
    intermediate; ``options``: the user's creation options, over the defaults)."""
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": count,
        "dtype": dtype.name, "crs": grid.crs, "transform": grid.transform,
        "nodata": nodata, "tiled": True, "blockxsize": block_size, "blockysize": block_size,
        **codec_options(compress if compress not in LOSSY_CODECS else "none", dtype.name),
        # Band interleaving: GDAL builds the overviews of a pixel-interleaved file band by
        # band, decompressing every block and recompressing every overview block once per
        # band; band-interleaved, overviews cost half (0.56 -> 0.26 s at 4096^2, 4 bands)
        # and the file is smaller, for the same write time.
        "interleave": "band", "bigtiff": "if_safer",
        # Blocks are compressed on all cores: writes happen between generator batches.
        "num_threads": "all_cpus",
    }
    if compress in LOSSY_CODECS:
        profile.update(_lossy_options(compress))
    profile.update({k.lower(): v for k, v in (options or {}).items()})
    return profile


class StripWriter:
    """Writes a raster top to bottom, in row strips of any height, to a tiled compressed GeoTIFF.

    Rows are staged until a whole block row is complete and written with one windowed write, so
    every compressed block is written exactly once. :meth:`close` builds internal overviews (or
    copies to a COG with GDAL's COG driver) and renames the temporary file to ``path``;
    :meth:`abort` (also called when the ``with`` block raises) deletes it.

    Args:
        path: final output path (checked with :func:`prepare_output`).
        grid: CRS, transform and size.
        count: bands.
        dtype: numpy/GDAL dtype name.
        nodata: nodata value (None for none). With a lossy codec the file gets no nodata
            value but an internal mask: valid where any band differs from ``nodata``.
        descriptions: band descriptions.
        colorinterp: colour interpretation per band (default: RGB when the first three
            descriptions are red, green, blue; else undefined/gray).
        colormap: colour table for a single-band class raster.
        cog: write a Cloud-Optimized GeoTIFF.
        overwrite: replace an existing ``path`` (and drop its stale ``.aux.xml``).
        overviews: build internal overviews (always on for a COG).
        resampling: overview resampling ("average" for imagery, "nearest" for classes).
        block_size: internal tile size (multiple of 16).
        compress: "deflate" (default), "zstd", "lzw", "none", or for 3 uint8 bands "jpeg" or
            "webp" (:data:`OUTPUT_CODECS`).
        tags: metadata items of the default domain (:mod:`geospade.provenance`); they go
            into the COG too.
        creation_options: GDAL creation options of the final file (GTiff's, or the COG
            driver's), over geospade's (:func:`check_creation_options`).
    """

    def __init__(self, path: str | Path, grid: Grid, count: int, dtype: str,
                 nodata: float | None = None, descriptions: Sequence[str] | None = None,
                 colorinterp: Sequence[ColorInterp] | None = None,
                 colormap: dict[int, tuple[int, ...]] | None = None, cog: bool = False,
                 overwrite: bool = False, overviews: bool = True, resampling: str = "average",
                 block_size: int = DEFAULT_BLOCK_SIZE, compress: str = "deflate",
                 tags: Mapping[str, str] | None = None,
                 creation_options: Mapping[str, str] | None = None) -> None:
        check_block_size(block_size)
        check_output_codec(compress, cog, count, dtype)
        self.creation_options = check_creation_options(
            creation_options, cog=cog, count=count, dtype=np.dtype(dtype).name,
            compress=compress)
        self.path = prepare_output(path, overwrite)
        self._replacing = self.path.exists()
        self.grid = grid
        self.count = count
        self.dtype = np.dtype(dtype)
        self.cog = cog
        self.overviews = overviews
        self.resampling = Resampling[resampling]
        self.block_size = block_size
        self.compress = compress
        self.rows_written = 0
        # Lossy codecs alter pixel values: no-data pixels go to an internal mask instead.
        self._mask_nodata = nodata if compress in LOSSY_CODECS else None
        self._stage = np.empty((count, min(block_size, grid.height), grid.width), dtype=self.dtype)
        self._staged = 0
        self._factors = overview_factors(grid.width, grid.height, block_size) if overviews else []
        # With overviews or a COG to make, rows go to an uncompressed intermediate when the disk
        # has room for it: GDAL then averages the overviews without decoding the full
        # resolution again, and one copy compresses everything (at 4096^2, 4 uint8 bands of
        # generated imagery: 0.55 s instead of 0.66 s for a GeoTIFF, about half for a COG).
        raw_bytes = grid.width * grid.height * count * self.dtype.itemsize
        self._raw = bool(cog or self._factors) and disk_has_room(self.path, 2 * raw_bytes)
        # (Names with a marker of outputs.TEMPORARY_MARKERS: the next run removes what a
        # killed one leaves.)
        self._tmp = _temp_name(self.path, "raw.tif" if self._raw else
                               "strips.tmp.tif" if cog else "partial.tmp.tif")
        self._final_tmp: Path | None = None  # the compressed copy of a raw intermediate
        self._dst = self._open(nodata)
        try:
            self._describe(descriptions, colorinterp, colormap, tags)
        except BaseException:
            self.abort()
            raise

    def _open(self, nodata: float | None) -> Any:
        """Open the file the rows go to: raw, compressed for a later COG copy, or final."""
        if self._raw:
            codec, options = "none", None
        elif self.cog:
            # Compressed strips the COG driver decodes again: never lossy twice.
            codec = "deflate" if self.compress in LOSSY_CODECS else self.compress
            options = None
        else:
            codec, options = self.compress, self.creation_options
        profile = _profile(self.grid, self.count, self.dtype,
                           None if self._mask_nodata is not None else nodata, self.block_size,
                           codec, options)
        try:
            with writing(self.path):
                return rasterio.open(self._tmp, "w", **profile)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def _describe(self, descriptions: Sequence[str] | None,
                  colorinterp: Sequence[ColorInterp] | None,
                  colormap: dict[int, tuple[int, ...]] | None,
                  tags: Mapping[str, str] | None) -> None:
        """Tags, band descriptions, and a colour table or colour interpretation."""
        if tags:
            self._dst.update_tags(**tags)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                self._dst.set_band_description(i, str(d))
        interp = colorinterp or default_colorinterp(descriptions, self.count)
        if colormap is not None and self.count == 1:
            self._dst.write_colormap(1, colormap)
        elif self.compress not in LOSSY_CODECS:  # (a lossy file's photometric says RGB)
            self._dst.colorinterp = interp

    def write(self, rows: np.ndarray) -> None:
        """Append ``rows`` ``(count, n, width)`` below the rows written so far."""
        if rows.shape[0] != self.count or rows.shape[2] != self.grid.width:
            raise ValueError(f"strip of shape {rows.shape} does not fit the raster")
        if self.rows_written + self._staged + rows.shape[1] > self.grid.height:
            raise ValueError("more rows than the raster has")
        done = 0
        while done < rows.shape[1]:
            n = min(rows.shape[1] - done, self._stage.shape[1] - self._staged)
            self._stage[:, self._staged:self._staged + n] = rows[:, done:done + n]
            self._staged += n
            done += n
            if self._staged == self._stage.shape[1]:
                self._flush()

    def _flush(self) -> None:
        if self._staged:
            window = Window(0, self.rows_written, self.grid.width, self._staged)
            rows = self._stage[:, :self._staged]
            with writing(self.path):
                self._dst.write(rows, window=window)
                if self._mask_nodata is not None:
                    # Valid pixels never equal nodata in any band (BlendingWriter moves them).
                    valid = (rows != self._mask_nodata).any(axis=0)
                    self._dst.write_mask(valid.astype(np.uint8) * 255, window=window)
            self.rows_written += self._staged
            self._staged = 0

    def close(self) -> Path:
        """Finish the file (overviews or COG) and move it to its final name; returns the path."""
        try:
            # Overviews are computed on all cores: the generator is idle by then.
            with limited_cache(GDAL_NUM_THREADS="ALL_CPUS"):
                self._finish()
        except BaseException:
            self.abort()
            raise
        return self.path

    def _finish(self) -> None:
        self._flush()
        if self.rows_written != self.grid.height:
            raise ValueError(f"only {self.rows_written} of {self.grid.height} rows written")
        # A write that fails while GDAL closes the file is only printed (by libtiff): writing()
        # turns it into an error before the damaged file is renamed into place.
        with writing(self.path):
            if self._factors and (self._raw or not self.cog):
                # (The COG driver takes a raw intermediate's overviews over: averaging them
                # here, band-interleaved, is faster than its own pass over its
                # pixel-interleaved copy.)
                self._dst.build_overviews(self._factors, self.resampling)
                self._dst.update_tags(ns="rio_overview", resampling=self.resampling.name)
            self._dst.close()
        if not (self.cog or self._raw):
            os.replace(self._tmp, self.path)  # the rows went straight to the final layout
        else:
            try:
                with atomic_path(self.path) as final_tmp:
                    self._final_tmp = final_tmp
                    self._copy(final_tmp)
            finally:
                self._tmp.unlink(missing_ok=True)
        if self._replacing:
            # GDAL's side-car of the file replaced (statistics, class names) describes it, not
            # this one; GDAL would merge it into this file's metadata.
            Path(f"{self.path}.aux.xml").unlink(missing_ok=True)

    def _copy(self, dst: Path) -> None:
        """Compress the intermediate (with its overviews) into the COG or GeoTIFF ``dst``."""
        if self.cog:
            options = {
                **_cog_codec_options(self.compress, self.dtype.name),
                "BLOCKSIZE": str(self.block_size), "BIGTIFF": "IF_SAFER",
                # One HTTP range request fetches every band of a tile: pixel interleaving,
                # which GDAL's COG driver always wrote before 3.11 added INTERLEAVE (older
                # ones warn that they do not know the option).
                **({"INTERLEAVE": "PIXEL"} if GDALVersion.runtime().at_least("3.11") else {}),
                "OVERVIEW_RESAMPLING": self.resampling.name.upper(),
                "OVERVIEWS": "AUTO" if self.overviews else "NONE",
                **self.creation_options,
            }
            rasterio.shutil.copy(self._tmp, dst, driver="COG", **options)
        else:
            options = {
                "COPY_SRC_OVERVIEWS": "YES", "TILED": "YES",
                "BLOCKXSIZE": str(self.block_size), "BLOCKYSIZE": str(self.block_size),
                "INTERLEAVE": "BAND", "BIGTIFF": "IF_SAFER", "NUM_THREADS": "ALL_CPUS",
                **{k.upper(): v for k, v in
                   _codec_profile(self.compress, self.dtype.name).items()},
                **self.creation_options,
            }
            rasterio.shutil.copy(self._tmp, dst, driver="GTiff", **options)
            # GDAL gives a one-band copy with overviews the COG layout, and refuses to update
            # such a file unless told: this file makes no COG promise to keep.
            with rasterio.open(dst, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as out:
                out.update_tags(ns="rio_overview", resampling=self.resampling.name)

    def abort(self) -> None:
        """Close and delete the temporary files (the final path is never touched)."""
        if not self._dst.closed:
            # On a full disk closing fails again, loudly: the error already raised says why.
            with captured_stderr(), contextlib.suppress(Exception):
                self._dst.close()
        self._tmp.unlink(missing_ok=True)
        if self._final_tmp is not None:
            self._final_tmp.unlink(missing_ok=True)

    def __enter__(self) -> StripWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
