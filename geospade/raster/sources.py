"""Raster inputs given as one path, a glob, a list file, a VRT or a URL, read as ONE dataset.

Users keep land cover and imagery in hundreds of tiles, often Cloud-Optimized GeoTIFFs behind
HTTPS or S3. Every raster input of ``tile`` and ``synthesize`` is a *spec*:

- one file, local or a GDAL path / URL (``/vsicurl/https://…``, ``https://…``, ``s3://…``,
  ``/vsizip/…``); a GDAL VRT is one file too;
- a glob (``"lc/*.tif"``, quoted so the shell leaves it alone; ``**`` recurses);
- a list file (``.txt``): one path or URL per line, relative paths from the list's folder,
  blank lines and ``#`` comments skipped.

Several files are read as one virtual mosaic, a VRT written in GDAL's in-memory file system
(``/vsimem/``), never on disk: each file is opened once for its grid and bands, and the VRT's
sources carry those facts, so a windowed read opens only the tiles it touches.

Rules of a mosaic (see :func:`open_input`):

- files of one grid (same CRS, pixel size, and origins a whole number of pixels apart) are
  placed by pixel offset, so their pixels are read unchanged: chips of a mosaic equal those of
  the single merged file, byte for byte;
- all files need the same band count, dtype and nodata value (one error naming the odd file);
- without ``onto`` the files must share one grid (one error naming the odd file); with ``onto``
  (the land cover's grid, for imagery) files of several grids are each mosaicked, warped onto
  ``onto`` and laid over each other, later groups over earlier ones;
- where no file has data (between tiles) the mosaic is nodata: the nodata value when the files
  have one, else the dataset mask; a land cover without a nodata value gets
  :func:`gap_nodata` of its dtype, as the land cover is read by value, never by mask.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.io import MemoryFile

from geospade.errors import GeospadeError, first_line
from geospade.outputs import is_local

#: Schemes GDAL reads through a virtual file system, and the prefix it needs for each.
URL_PREFIXES = {"http": "/vsicurl/", "https": "/vsicurl/", "ftp": "/vsicurl/",
                "s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}

GLOB_CHARACTERS = "*?["
LIST_SUFFIX = ".txt"
#: Largest mismatch, in pixels over a file's width or height, still taken as the same grid.
GRID_TOLERANCE = 1e-3
#: Files opened at once when a mosaic reads the grids of remote files.
OPEN_THREADS = 16


class GapFill(Enum):
    """How a mosaic marks pixels no file covers, when its files have no nodata value."""

    NODATA = "nodata"  # a nodata value (gap_nodata): rasters read by value (the land cover)
    MASK = "mask"  # the dataset mask: rasters whose readers honour masks (imagery)


class GridLike(Protocol):
    """Anything with a grid: a :class:`geospade.raster.grid.Grid` or an open dataset."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int


# -- what a spec names --------------------------------------------------------------------------


def gdal_path(path: str | os.PathLike) -> str:
    """The path GDAL opens for ``path``: a URL gets its virtual file system prefix
    (``https://h/a.tif`` -> ``/vsicurl/https://h/a.tif``, ``s3://b/k`` -> ``/vsis3/b/k``);
    anything else is returned as given."""
    text = unfolded(path)
    scheme, sep, rest = text.partition("://")
    prefix = URL_PREFIXES.get(scheme.lower()) if sep else None
    if prefix is None:
        return text
    return prefix + (text if prefix == "/vsicurl/" else rest)


def unfolded(path: str | os.PathLike) -> str:
    """``path`` as text, with the ``//`` of a URL that went through ``pathlib.Path`` put back
    (``https:/h/a.tif`` -> ``https://h/a.tif``, for the schemes of :data:`URL_PREFIXES`)."""
    text = os.fspath(path)
    scheme, sep, rest = text.partition(":/")
    if sep and scheme.lower() in URL_PREFIXES and not rest.startswith("/"):
        return f"{scheme}://{rest}"
    return text


def is_glob(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local glob pattern (and not a file whose name has ``*?[``)."""
    text = os.fspath(path)
    return is_local(text) and any(c in text for c in GLOB_CHARACTERS) and not Path(text).exists()


def is_list_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local list file of rasters (``.txt``)."""
    text = os.fspath(path)
    return is_local(text) and text.lower().endswith(LIST_SUFFIX)


def input_files(spec: str | os.PathLike, role: str) -> list[str]:
    """The raster files ``spec`` names, in order (later files lie over earlier ones).

    Args:
        spec: one path or URL, a glob or a list file (see the module's docstring).
        role: what the input is for the user ("land cover", "imagery"), for messages.

    Returns:
        Local files as the glob or list names them (relative list entries joined to the list's
        folder), URLs and GDAL paths as given.

    Raises:
        GeospadeError: a glob matches no file, or a list file is missing, empty or names a
            local file that is not there.
    """
    text = os.fspath(spec)
    if is_list_file(text):
        return _list_entries(Path(text), role)
    if is_glob(text):
        matches = sorted(p for p in glob.glob(os.path.expanduser(text), recursive=True)
                         if os.path.isfile(p))
        if not matches:
            raise GeospadeError(f"no {role} file matches {text}")
        return matches
    return [unfolded(text)]


def _list_entries(listing: Path, role: str) -> list[str]:
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise GeospadeError(f"{role} list file not found: {listing}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GeospadeError(f"cannot read {role} list file {listing}: {first_line(exc)}") from None
    files = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_local(entry):
            path = Path(entry).expanduser()
            entry = str(path if path.is_absolute() else listing.parent / path)
            if not os.path.exists(entry):
                raise GeospadeError(f"{role} file not found: {entry} (listed in {listing})")
        files.append(entry)
    if not files:
        raise GeospadeError(f"{role} list file {listing} names no file")
    return files


def local_inputs(spec: str | os.PathLike | None) -> list[str]:
    """The local files reading ``spec`` touches (a list file and its entries, a glob's
    matches), for the output checks; never raises (an unresolvable spec fails later, where it
    is opened)."""
    if spec is None or not is_local(spec):
        return []
    text = os.fspath(spec)
    if not (is_glob(text) or is_list_file(text)):
        return [text]
    try:
        files = input_files(text, "input")
    except GeospadeError:
        files = []
    listing = [text] if is_list_file(text) else []
    return listing + [f for f in files if is_local(f)]


def absolute_spec(spec: str | os.PathLike) -> str:
    """``spec`` as a record (a manifest) should keep it: local paths, globs and list files
    absolute, URLs and GDAL paths untouched."""
    text = unfolded(spec)
    return str(Path(text).expanduser().absolute()) if is_local(text) else text


def source_record(spec: str | os.PathLike, role: str = "input") -> dict[str, Any]:
    """What a manifest records of a raster input: ``path`` (the spec, :func:`absolute_spec`)
    and ``files`` (every file read, local ones absolute)."""
    files = input_files(spec, role)
    return {"path": absolute_spec(spec), "files": [absolute_spec(f) for f in files]}


# -- opening ------------------------------------------------------------------------------------


def open_input(spec: str | os.PathLike, role: str, *, onto: GridLike | None = None,
               resampling: str = "bilinear", gaps: GapFill = GapFill.MASK
               ) -> rasterio.io.DatasetReader:
    """Open the raster(s) ``spec`` names as one dataset.

    Args:
        spec: one path or URL, a glob or a list file (see the module's docstring).
        role: what it is for the user ("land cover", "imagery"), for messages.
        onto: the reference grid: files of several grids are then warped onto it (with
            ``resampling``, ``bilinear`` or ``cubic``) and the result lies on it; without it
            the files must share one grid. Files of one grid are never warped here.
        gaps: how pixels no file covers are marked when the files have no nodata value.

    Returns:
        The open dataset: the file itself for one file, else an in-memory VRT.

    Raises:
        GeospadeError: a file is missing, not a regular file or unreadable, or the files do
            not fit together (band count, dtype, nodata; grids without ``onto``).
    """
    files = input_files(spec, role)
    if len(files) == 1:
        return _open_file(files[0], role)
    return _open_file(mosaic_path(files, role, _mosaic_name(spec), onto, resampling, gaps), role)


def _open_file(path: str, role: str) -> rasterio.io.DatasetReader:
    """Open one raster; a missing, odd or unreadable file is a one-line error."""
    if is_local(path):
        p = Path(path)
        if not p.exists():
            raise GeospadeError(f"{role} file not found: {path}")
        if p.is_dir():
            raise GeospadeError(f"{role} path is a folder, not a raster: {path}")
        if not p.is_file():  # a FIFO or a device would block or never end
            raise GeospadeError(f"{role} path is not a regular file: {path}")
    try:
        return rasterio.open(gdal_path(path))
    except rasterio.errors.RasterioIOError as exc:
        if "not recognized as being in a supported file format" in str(exc):
            raise GeospadeError(f"{role} {path} is not a readable raster: not a raster "
                                "format GDAL knows") from None
        raise GeospadeError(f"{role} {path} is not a readable raster "
                            f"({first_line(exc)})") from None


def _mosaic_name(spec: str | os.PathLike) -> str:
    """A file stem for the mosaic of ``spec`` (its name shows in messages and tile names):
    the list file's stem, a glob's fixed part, or its folder's name."""
    path = Path(os.fspath(spec))
    if is_list_file(spec):
        return path.stem
    stem = path.stem.split("*")[0].split("?")[0].split("[")[0].strip("_-. ")
    return stem or path.parent.name.strip("*?[]") or "mosaic"


# -- the files of a mosaic ----------------------------------------------------------------------


@dataclass(frozen=True)
class _File:
    """What a mosaic needs to know of one file (read once, when the mosaic is built)."""

    path: str
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    colorinterp: tuple[ColorInterp, ...]
    descriptions: tuple[str | None, ...]
    block: tuple[int, int]
    masked: bool  # a per-dataset mask (no nodata, no alpha band)

    @property
    def alpha(self) -> int | None:
        """The 1-based index of its alpha band, if it has one."""
        return next((i + 1 for i, c in enumerate(self.colorinterp) if c == ColorInterp.alpha),
                    None)


def _read_file(path: str, role: str) -> _File:
    with _open_file(path, role) as ds:
        flags = ds.mask_flag_enums[0]
        return _File(
            path=path, crs=ds.crs, transform=ds.transform, width=ds.width, height=ds.height,
            count=ds.count, dtype=ds.dtypes[0], nodata=ds.nodata,
            colorinterp=tuple(ds.colorinterp), descriptions=tuple(ds.descriptions),
            block=ds.block_shapes[0],
            masked=MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags,
        )


def _read_files(files: Sequence[str], role: str) -> list[_File]:
    """Every file's grid and bands; remote files are opened a few at a time (each open is a
    round trip or more)."""
    if all(is_local(f) for f in files):
        return [_read_file(f, role) for f in files]
    with ThreadPoolExecutor(min(OPEN_THREADS, len(files))) as pool:
        return list(pool.map(lambda f: _read_file(f, role), files))


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or (math.isnan(a) and math.isnan(b))


def _check_bands(files: Sequence[_File], role: str) -> None:
    """All files have the first one's band count, dtype, nodata and alpha band."""
    first = files[0]
    for f in files[1:]:
        if (f.count, f.dtype, f.alpha) != (first.count, first.dtype, first.alpha) or not \
                _same_nodata(f.nodata, first.nodata):
            raise GeospadeError(
                f"{role} files must have the same bands: {f.path} has {_bands_text(f)}, "
                f"{first.path} {_bands_text(first)}")


def _bands_text(f: _File) -> str:
    alpha = "" if f.alpha is None else f", alpha band {f.alpha}"
    return f"{f.count} band(s) of {f.dtype} (nodata {f.nodata}{alpha})"


def _grid_difference(f: _File, ref: _File) -> str | None:
    """Why ``f`` is not on ``ref``'s grid, or None when it is (pixel offsets whole)."""
    from geospade.raster.alignment import same_crs

    if not same_crs(f.crs, ref.crs):
        return f"is in {_crs_name(f.crs)}, not {_crs_name(ref.crs)} like"
    t, r = f.transform, ref.transform
    if not (t.is_rectilinear and r.is_rectilinear):
        return "is rotated, unlike" if not t.is_rectilinear else "is not rotated, unlike"
    span = max(f.width, f.height, ref.width, ref.height)
    if abs(t.a - r.a) * span > GRID_TOLERANCE * abs(r.a) or \
            abs(t.e - r.e) * span > GRID_TOLERANCE * abs(r.e):
        return f"has {abs(t.a):g} x {abs(t.e):g} pixels, not {abs(r.a):g} x {abs(r.e):g} like"
    col, row = ~r * (t.c, t.f)
    if abs(col - round(col)) > GRID_TOLERANCE or abs(row - round(row)) > GRID_TOLERANCE:
        return (f"is offset by a fraction of a pixel ({col - round(col):+.3f}, "
                f"{row - round(row):+.3f}) from the grid of")
    return None


def _crs_name(crs: CRS | None) -> str:
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else "another CRS"


def _group_by_grid(files: Sequence[_File]) -> list[list[_File]]:
    """Files in groups of one grid each, in order of their first file."""
    groups: list[list[_File]] = []
    for f in files:
        group = next((g for g in groups if _grid_difference(f, g[0]) is None), None)
        if group is None:
            groups.append([f])
        else:
            group.append(f)
    return groups


# -- the mosaic VRT -----------------------------------------------------------------------------

_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "uint64": "UInt64", "int64": "Int64",
               "float32": "Float32", "float64": "Float64"}

# Built mosaics, by their files and options, and the in-memory files they live in: kept for the
# life of the process (a few kB each), so every open of the same input (each tiling worker,
# forked with them) reuses them.
_BUILT: dict[tuple, str] = {}
_MEMORY: list[MemoryFile] = []


def mosaic_path(files: Sequence[str], role: str, name: str = "mosaic",
                onto: GridLike | None = None, resampling: str = "bilinear",
                gaps: GapFill = GapFill.MASK) -> str:
    """The ``/vsimem/`` path of a VRT mosaicking ``files`` (arguments as :func:`open_input`).

    Built once per process for the same files (and, for local files, the same sizes and
    modification times) and options.
    """
    key = (tuple(files), tuple(_stamp(f) for f in files), name, _grid_key(onto), resampling,
           gaps)
    if key not in _BUILT:
        _BUILT[key] = _build(files, role, name, onto, resampling, gaps)
    return _BUILT[key]


def _stamp(path: str) -> tuple[int, int] | None:
    if not is_local(path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _grid_key(grid: GridLike | None) -> tuple | None:
    if grid is None:
        return None
    return (grid.crs.to_wkt() if grid.crs else None, tuple(grid.transform)[:6], grid.width,
            grid.height)


def _memory_file(xml: str, name: str) -> str:
    memory = MemoryFile(xml.encode("utf-8"), filename=f"{name}.vrt")
    _MEMORY.append(memory)
    return memory.name


def _build(files: Sequence[str], role: str, name: str, onto: GridLike | None,
           resampling: str, gaps: GapFill) -> str:
    tiles = _read_files(files, role)
    _check_bands(tiles, role)
    groups = _group_by_grid(tiles)
    if len(groups) == 1:
        return _memory_file(_group_xml(groups[0], gaps), name)
    if onto is None:
        odd = groups[1][0]
        raise GeospadeError(f"{role} files must share one grid (CRS, pixel size, whole-pixel "
                            f"offsets): {odd.path} {_grid_difference(odd, tiles[0])} "
                            f"{tiles[0].path}")
    return _warped_mosaic(groups, name, onto, resampling)


def _group_xml(tiles: Sequence[_File], gaps: GapFill) -> str:
    """The VRT of files on one grid, each placed at its whole-pixel offset."""
    ref = tiles[0]
    offsets = [tuple(round(v) for v in ~ref.transform * (t.transform.c, t.transform.f))
               for t in tiles]
    col0 = min(c for c, _ in offsets)
    row0 = min(r for _, r in offsets)
    width = max(c + t.width for (c, _), t in zip(offsets, tiles, strict=True)) - col0
    height = max(r + t.height for (_, r), t in zip(offsets, tiles, strict=True)) - row0
    places = [(c - col0, r - row0) for c, r in offsets]
    nodata, masked = ref.nodata, False
    if nodata is None and ref.alpha is None:
        covered = _covers(places, tiles, width, height)
        if gaps is GapFill.NODATA:
            nodata = None if covered else gap_nodata(ref.dtype)
        else:
            masked = not covered or any(t.masked for t in tiles)
    root = _dataset(ref.crs, ref.transform * Affine.translation(col0, row0), width, height)
    for b in range(1, ref.count + 1):
        band = _band(root, b, ref, nodata)
        for t, place in zip(tiles, places, strict=True):
            where = (t.path, b, (t.width, t.height), place)
            if t.nodata is not None or b == ref.alpha:  # nodata pixels leave earlier files
                _source(band, *where, properties=(t.dtype, t.block),
                        nodata=0 if b == ref.alpha else t.nodata)
            else:
                _source(band, *where, properties=(t.dtype, t.block),
                        use_mask=masked or ref.alpha is not None)
    if masked:
        mask = ET.SubElement(ET.SubElement(root, "MaskBand"), "VRTRasterBand",
                             dataType="Byte")
        for t, place in zip(tiles, places, strict=True):
            _source(mask, t.path, "mask,1", (t.width, t.height), place,
                    properties=("uint8", t.block), nodata=0)
    return ET.tostring(root, encoding="unicode")


def gap_nodata(dtype: str) -> float:
    """The nodata value a land-cover mosaic without one gets for the pixels between its files:
    the dtype's largest value (unsigned), smallest (signed), or NaN (floats)."""
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return float("nan")
    info = np.iinfo(kind)
    return info.max if kind.kind == "u" else info.min


def _covers(places: Sequence[tuple[int, int]], tiles: Sequence[_File], width: int,
            height: int) -> bool:
    """Whether the files, placed at ``places``, cover the whole ``width`` x ``height``."""
    import shapely

    boxes = [shapely.box(c, r, c + t.width, r + t.height)
             for (c, r), t in zip(places, tiles, strict=True)]
    return shapely.union_all(boxes).area >= width * height  # whole numbers: exact


def _dataset(crs: CRS | None, transform: Affine, width: int, height: int) -> ET.Element:
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    if crs is not None:
        ET.SubElement(root, "SRS").text = crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in transform.to_gdal())
    return root


def _band(root: ET.Element, index: int, ref: _File, nodata: float | None) -> ET.Element:
    band = ET.SubElement(root, "VRTRasterBand", dataType=_GDAL_TYPES[ref.dtype],
                         band=str(index))
    if nodata is not None:
        ET.SubElement(band, "NoDataValue").text = _number(nodata)
    description = ref.descriptions[index - 1]
    if description:
        ET.SubElement(band, "Description").text = description
    ET.SubElement(band, "ColorInterp").text = ref.colorinterp[index - 1].name
    return band


def _number(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "nan"
    return str(int(value)) if value.is_integer() else repr(value)


def _source(band: ET.Element, path: str, source_band: int | str, size: tuple[int, int],
            place: tuple[int, int], *, properties: tuple[str, tuple[int, int]] | None = None,
            nodata: float | None = None, use_mask: bool = False) -> None:
    """Add band ``source_band`` (an index, or ``"mask,1"``) of the ``size`` (width, height)
    raster ``path`` at ``place`` (col, row) of the VRT.

    A plain source copies every pixel; with ``nodata`` or ``use_mask`` (a complex source) the
    file's nodata or masked pixels leave what earlier files put there. ``properties`` (dtype,
    block shape) let GDAL open the file only when a read touches it.
    """
    complex_ = nodata is not None or use_mask
    source = ET.SubElement(band, "ComplexSource" if complex_ else "SimpleSource")
    ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = _absolute(path)
    ET.SubElement(source, "SourceBand").text = str(source_band)
    if properties is not None:
        dtype, block = properties
        ET.SubElement(source, "SourceProperties", RasterXSize=str(size[0]),
                      RasterYSize=str(size[1]), DataType=_GDAL_TYPES[dtype],
                      BlockXSize=str(block[1]), BlockYSize=str(block[0]))
    rect = {"xSize": str(size[0]), "ySize": str(size[1])}
    ET.SubElement(source, "SrcRect", xOff="0", yOff="0", **rect)
    ET.SubElement(source, "DstRect", xOff=str(place[0]), yOff=str(place[1]), **rect)
    if nodata is not None:
        ET.SubElement(source, "NODATA").text = _number(nodata)
    if use_mask:
        ET.SubElement(source, "UseMaskBand").text = "true"


def _absolute(path: str) -> str:
    return os.path.abspath(path) if is_local(path) else gdal_path(path)


# -- files of several grids, warped onto a reference grid --------------------------------------


def _warped_mosaic(groups: Sequence[Sequence[_File]], name: str, onto: GridLike,
                   resampling: str) -> str:
    """A VRT on ``onto``: each group's mosaic warped onto it, later groups over earlier ones
    where they have data (the warp's alpha), the alphas together as the dataset mask."""
    from geospade.raster.alignment import warped_imagery

    digest = hashlib.sha1(repr(_grid_key(onto)).encode()).hexdigest()[:8]
    warped = []
    for i, group in enumerate(groups):
        group_path = _memory_file(_group_xml(group, GapFill.MASK), f"{name}-grid{i}")
        with rasterio.open(group_path) as ds:
            vrt, alpha = warped_imagery(ds, onto, resampling)
            with vrt:
                xml = vrt.tags(ns="xml:VRT")["xml:VRT"]
        warped.append((_memory_file(xml, f"{name}-grid{i}-on-{digest}"), alpha))
    ref = groups[0][0]
    size = (onto.width, onto.height)
    root = _dataset(onto.crs, onto.transform, *size)
    for b in range(1, ref.count + 1):
        band = _band(root, b, ref, ref.nodata)
        for path, alpha in warped:
            if b == alpha:
                _source(band, path, b, size, (0, 0), nodata=0)
            else:
                _source(band, path, b, size, (0, 0), use_mask=True)
    if ref.alpha is None:
        mask = ET.SubElement(ET.SubElement(root, "MaskBand"), "VRTRasterBand",
                             dataType="Byte")
        for path, alpha in warped:
            _source(mask, path, alpha, size, (0, 0), nodata=0)
    return _memory_file(ET.tostring(root, encoding="unicode"), f"{name}-on-{digest}")
