"""The chip store (docs/design.md, "Chip store"): the one module that knows its layout.

It writes the image and mask chips (:class:`ChipWriter`), ``index.gpkg`` (:func:`write_index`)
and ``manifest.json`` (:func:`write_manifest`), and reads them back: :func:`open_chip_store`
validates the manifest into a :class:`ChipStore`, :func:`read_index` lists the chips,
:func:`manifest_sha256` is the store's identity. Everyone else calls these.

Layout (format version 1)::

    OUT/images/<id>.tif   imagery chip, source dtype and band descriptions, CRS + window transform
    OUT/masks/<id>.tif    uint8 class indices, 255 = ignore, the scheme's colour table
    OUT/masks/<id>.tif.aux.xml  the class names (GDAL category names, which QGIS's legend shows),
                          when the writer is given the classes
    OUT/index.gpkg        layer "chips", one row per chip; class fractions in columns
                          frac_<class name> (:func:`class_fraction_columns`; stores before them:
                          frac_<index>, :attr:`ChipStore.fraction_columns` reads either)
    OUT/manifest.json     written last; a store without it is incomplete
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from geospade.errors import GeospadeError, check_format_header
from geospade.io_errors import writing
from geospade.normalization import BandStats
from geospade.raster.codecs import codec_options
from geospade.schemes import IGNORE_INDEX, ClassScheme

if TYPE_CHECKING:
    from geospade.raster.strip_writer import RasterClass

FORMAT = "geospade-chips"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX = "index.gpkg"
INDEX_LAYER = "chips"
IMAGES = "images"
MASKS = "masks"
SPLITS = ("train", "val", "test")
INDEX_BATCH = 4096  # chip records written to index.gpkg at a time
"""The splits a chip belongs to, in the order of the manifest's ``counts``."""

# Chip compression. Writing a chip is dominated by per-file costs, not by pixels: creating a
# GeoTIFF through GDAL costs about 1-2 ms (half of it encoding the CRS as GeoKeys), about as much
# as decoding the chip from the source. Uncompressed chips ("none", the default) are therefore
# written by cloning one GDAL-made template per chip shape (see ChipWriter); the codecs go through
# GDAL for every chip (geospade.raster.codecs, no predictor). Numbers: benchmarks/bench_tile.py.


def chip_id(row_off: int, col_off: int) -> str:
    """The chip's id: its row and column offset in the land-cover grid."""
    return f"{row_off:06d}_{col_off:06d}"


def image_profile(
    count: int, dtype: str, crs: CRS, nodata: float | None, rgb: bool, compress: str = "none"
) -> dict:
    """GeoTIFF creation profile of an imagery chip (without size and transform).

    Args:
        rgb: bands 1-3 are red, green, blue: the chip says so (photometric RGB, further bands
            unspecified extra samples, never alpha); otherwise every band is grey.
    """
    # Band-interleaved: a chip is stored as the (C, H, W) array it is read into, no shuffling.
    profile = dict(driver="GTiff", count=count, dtype=dtype, crs=crs, nodata=nodata,
                   interleave="band", **codec_options(compress))
    if rgb and count >= 3 and np.dtype(dtype) in (np.uint8, np.uint16):
        profile.update(photometric="rgb", alpha="unspecified")
    else:
        profile.update(photometric="minisblack")
    return profile


def mask_profile(crs: CRS, compress: str = "none") -> dict:
    """GeoTIFF creation profile of a mask chip: uint8 class indices, 255 = nodata, palette."""
    return dict(driver="GTiff", count=1, dtype="uint8", crs=crs, nodata=IGNORE_INDEX,
                photometric="palette", **codec_options(compress))


def mask_classes(scheme: ClassScheme) -> list[RasterClass]:
    """The classes of a mask chip (class index, name, colour), for :class:`ChipWriter`'s
    ``classes``."""
    from geospade.raster.strip_writer import RasterClass

    return [RasterClass(i, c.name, (*c.color, 255)) for i, c in enumerate(scheme.classes)]


def class_fraction_columns(class_names: Sequence[str]) -> list[str]:
    """The ``index.gpkg`` columns of the class fractions: ``frac_<name>``, the class name in
    lower case with every run of other characters than letters and digits as ``_``
    ("tree canopy and shrubs" -> ``frac_tree_canopy_and_shrubs``); a name that is empty or
    taken by an earlier class then gets its index (``frac_<name>_<i>``, ``frac_<i>``).

    Args:
        class_names: the scheme's class names, in index order.

    Returns:
        One column name per class.
    """
    columns: list[str] = []
    for i, name in enumerate(class_names):
        stem = re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")
        column = f"frac_{stem}" if stem else f"frac_{i}"
        if column in columns:
            column = f"{column}_{i}"
        columns.append(column)
    return columns


class ChipWriter:
    """Writes same-shaped chips of one kind (imagery or mask) as georeferenced GeoTIFFs.

    For uncompressed chips, GDAL writes one template chip in memory (all tags: CRS GeoKeys,
    nodata, band descriptions, colour table) and each chip is that file with two things replaced:
    the pixel strip and the origin in the georeferencing tag. Every other byte is GDAL's own, so
    the chips are exactly what GDAL would write, at a fraction of the per-file cost. Compressed
    chips, and any template layout this does not recognise, are written through rasterio.

    Args:
        profile: :func:`image_profile` or :func:`mask_profile`.
        descriptions: band descriptions to set (imagery).
        colormap: colour table of band 1 (masks).
        tags: metadata items of every chip (e.g. :func:`geospade.provenance.chip_tags`): in
            the template, so they cost nothing per chip.
        classes: the classes of a mask (:func:`mask_classes`): each chip also gets a
            ``.aux.xml`` naming them, which QGIS shows in its legend (one more small file per
            chip: about 1 ms each on a slow disk).
    """

    def __init__(self, profile: dict, descriptions=(), colormap: dict | None = None,
                 tags: Mapping[str, str] | None = None,
                 classes: Sequence[RasterClass] | None = None):
        self.profile = profile
        self.descriptions = list(descriptions)
        self.colormap = colormap
        self.tags = dict(tags or {})
        self._aux = None
        if classes:
            from geospade.raster.strip_writer import class_aux_xml

            # Category names only: what QGIS labels the colour table with, in 0.4 kB.
            self._aux = class_aux_xml(classes, rat=False)
        self._templates: dict[tuple, _Template | None] = {}

    def write(self, path: Path, data: np.ndarray, transform: Affine) -> None:
        """Write ``data`` (``(C, H, W)``, or ``(H, W)`` for one band) with ``transform`` (a
        pixel grid, for a store without CRS: GDAL's not-georeferenced warning is expected)."""
        with warnings.catch_warnings():
            if self.profile.get("crs") is None:
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._write(path, data[None] if data.ndim == 2 else data, transform)
        if self._aux is not None:
            Path(f"{path}.aux.xml").write_bytes(self._aux)

    def _write(self, path: Path, data: np.ndarray, transform: Affine) -> None:
        key = (data.shape, data.dtype.str, transform.a, transform.b, transform.d, transform.e)
        if "compress" not in self.profile:
            if key not in self._templates:
                self._templates[key] = self._template(data, transform)
            template = self._templates[key]
            if template is not None:
                template.stamp(path, data, transform)
                return
        count, height, width = data.shape
        with rasterio.open(path, "w", width=width, height=height, transform=transform,
                           blockysize=height, **self.profile) as dst:
            self._fill(dst, data)

    def _fill(self, dst, data: np.ndarray) -> None:
        # Tags before pixels, so GDAL writes the directory once (no stale copy left in the file).
        if self.tags:
            dst.update_tags(**self.tags)
        for b, desc in enumerate(self.descriptions, start=1):
            if desc:
                dst.set_band_description(b, desc)
        if self.colormap is not None:
            dst.write_colormap(1, self.colormap)
        dst.write(data)

    def _template(self, data: np.ndarray, transform: Affine) -> _Template | None:
        count, height, width = data.shape
        with MemoryFile() as mem:
            with mem.open(width=width, height=height, transform=transform, blockysize=height,
                          **self.profile) as dst:
                # Non-zero pixels, so GDAL cannot leave the strip out as sparse.
                self._fill(dst, np.ones_like(data))
            raw = mem.read()
        return _Template.parse(raw, data.nbytes, transform)


class _Template:
    """A GDAL-written, uncompressed, little-endian GeoTIFF whose pixels are one contiguous run,
    split into the bytes before the pixels and the bytes after them."""

    def __init__(self, data: bytes, start: int, nbytes: int, planar: bool, origin: int, step: int):
        self.head = data[:start]
        self.tail = data[start + nbytes :]
        self.start = start
        self.nbytes = nbytes
        self.planar = planar  # True: band after band (C, H, W); False: pixel-interleaved
        self.origin = origin  # byte offset of the double holding x of the origin
        self.step = step  # doubles from x to y of the origin

    @classmethod
    def parse(cls, data: bytes, nbytes: int, transform: Affine) -> _Template | None:
        """The template of a GeoTIFF written by GDAL, or None when its layout is not the plain
        one this understands (then every chip goes through GDAL)."""
        if data[:4] != b"II*\x00":
            return None  # big-endian or BigTIFF
        (ifd,) = struct.unpack_from("<I", data, 4)
        (n,) = struct.unpack_from("<H", data, ifd)
        tags = {}
        for i in range(n):
            tags.update({struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0]: ifd + 2 + 12 * i})

        def values(tag: int) -> list[int] | None:
            if tag not in tags:
                return None
            _, typ, count = struct.unpack_from("<HHI", data, tags[tag])
            fmt = {3: "H", 4: "I"}.get(typ)
            if fmt is None:
                return None
            size = struct.calcsize(fmt) * count
            at = tags[tag] + 8 if size <= 4 else struct.unpack_from("<I", data, tags[tag] + 8)[0]
            return list(struct.unpack_from(f"<{count}{fmt}", data, at))

        if (values(259) or [1])[0] != 1:  # compressed
            return None
        offsets, counts = values(273), values(279)
        if not offsets or not counts or sum(counts) != nbytes:
            return None
        run = offsets[0]
        for off, cnt in zip(offsets, counts, strict=True):
            if off != run:
                return None  # strips not back to back
            run += cnt
        planar = (values(284) or [1])[0] == 2
        origin = step = None
        if 33922 in tags:  # ModelTiepoint (I, J, K, X, Y, Z)
            (at,) = struct.unpack_from("<I", data, tags[33922] + 8)
            if struct.unpack_from("<2d", data, at) != (0.0, 0.0):
                return None
            origin, step = at + 24, 1
        elif 34264 in tags:  # ModelTransformation, row-major 4 x 4
            (at,) = struct.unpack_from("<I", data, tags[34264] + 8)
            origin, step = at + 24, 4
        if origin is None:
            return None
        x = struct.unpack_from("<d", data, origin)[0]
        y = struct.unpack_from("<d", data, origin + 8 * step)[0]
        if (x, y) != (transform.c, transform.f) or offsets[0] <= origin < run:
            return None
        return cls(data, offsets[0], nbytes, planar, origin, step)

    def stamp(self, path: Path, data: np.ndarray, transform: Affine) -> None:
        """Write ``data`` ``(C, H, W)`` with the origin of ``transform``."""
        head, tail = self.head, self.tail
        if self.origin < self.start:
            head = bytearray(head)
            struct.pack_into("<d", head, self.origin, transform.c)
            struct.pack_into("<d", head, self.origin + 8 * self.step, transform.f)
        else:
            tail = bytearray(tail)
            at = self.origin - self.start - self.nbytes
            struct.pack_into("<d", tail, at, transform.c)
            struct.pack_into("<d", tail, at + 8 * self.step, transform.f)
        order = data if self.planar else np.moveaxis(data, 0, -1)
        pixels = np.ascontiguousarray(order, dtype=data.dtype.newbyteorder("<"))
        with open(path, "wb") as f:
            f.write(head)
            f.write(pixels.data.cast("B"))
            f.write(tail)


def write_index(
    path: Path, records: list[dict], classes: int | Sequence[str], crs: CRS | None,
    append: bool = False
) -> None:
    """Write ``index.gpkg`` (layer ``chips``): one row per chip with its footprint polygon.

    Args:
        records: chip records with id, split, row_off, col_off, width, height, nodata_fraction,
            class_fractions (list of K), image, mask and bounds (left, bottom, right, top).
        classes: the class names: the fraction columns are named by class
            (:func:`class_fraction_columns`); a number of classes K gives the columns of
            stores before them, ``frac_0`` … ``frac_<K-1>``.
        crs: the footprints' CRS (None: a store without one; footprints in pixels).
        append: add to an existing index instead of creating it.
    """
    import geopandas as gpd
    from shapely import box

    columns: dict[str, list] = {
        "id": [r["id"] for r in records],
        "split": [r["split"] for r in records],
        "row_off": [r["row_off"] for r in records],
        "col_off": [r["col_off"] for r in records],
        "width": [r["width"] for r in records],
        "height": [r["height"] for r in records],
        "nodata_fraction": [r["nodata_fraction"] for r in records],
    }
    names = ([f"frac_{i}" for i in range(classes)] if isinstance(classes, int)
             else class_fraction_columns(classes))
    for i, name in enumerate(names):
        columns[name] = [r["class_fractions"][i] for r in records]
    columns["image"] = [r["image"] for r in records]
    columns["mask"] = [r["mask"] for r in records]
    geometry = [box(*r["bounds"]) for r in records]
    frame = gpd.GeoDataFrame(columns, geometry=geometry,
                             crs=None if crs is None else crs.to_wkt())
    frame.to_file(path, layer=INDEX_LAYER, driver="GPKG", mode="a" if append else "w")


@contextlib.contextmanager
def new_store(out: Path) -> Iterator[Path]:
    """A store written whole or not at all: a temporary folder beside ``out``
    (``.OUT.partial-XXXXXXXX``) with the chip folders, renamed to ``out`` when the block
    succeeds and removed when it fails. An old store at ``out`` (the caller checked that it may
    be replaced) is renamed aside and deleted only once the new one is in place.
    """
    folder = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        (folder / IMAGES).mkdir(parents=True)
        (folder / MASKS).mkdir()
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise GeospadeError(f"cannot write the chip store in {out.parent}: "
                            f"{exc.strerror}") from None
    try:
        yield folder
        old = None
        if out.exists() and any(out.iterdir()):
            old = out.with_name(f".{out.name}.partial-old-{uuid.uuid4().hex[:8]}")
            out.rename(old)
        os.replace(folder, out)  # onto a missing or empty folder
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


class IndexWriter:
    """Writes chip records to ``index.gpkg`` in batches of :data:`INDEX_BATCH` (a GeoPackage
    append per record would dominate tiling), through :func:`write_index`.

    Args:
        path: the index file (in a store being written).
        classes: as :func:`write_index`'s.
        crs: the footprints' CRS (None: a store without one).
        shown_as: the name failures give (the finished store's file; default ``path``).
    """

    def __init__(self, path: Path, classes: int | Sequence[str], crs: CRS | None,
                 shown_as: Path | None = None) -> None:
        self.path, self.classes, self.crs = path, classes, crs
        self.shown_as = path if shown_as is None else shown_as
        self.pending: list[dict] = []
        self.rows = 0

    def add(self, records: Sequence[dict]) -> None:
        """Queue ``records``; a full batch is written."""
        self.pending.extend(records)
        if len(self.pending) >= INDEX_BATCH:
            self._flush()

    def close(self) -> None:
        """Write the records still pending."""
        self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        with writing(self.shown_as), warnings.catch_warnings():
            # pyogrio warns that an index without a CRS has none: the summary says so.
            warnings.filterwarnings("ignore", message="'crs' was not provided")
            write_index(self.path, self.pending, self.classes, self.crs, append=self.rows > 0)
        self.rows += len(self.pending)
        self.pending = []


def write_manifest(path: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (the last file of a store) via a temporary file and a rename.

    The manifest is strict JSON: a NaN or infinite number in ``manifest`` is a bug of the
    caller (band stats are computed from finite pixels only, a non-finite nodata is written as
    a string by :func:`geospade.normalization.nodata_to_json`), so it raises ``ValueError``
    and writes nothing rather than a file other JSON readers refuse.
    """
    try:
        text = json.dumps(manifest, indent=2, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"{path.name} would hold a NaN or infinite number ({exc})") from None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


# -- reading the manifest ----------------------------------------------------------------------


def manifest_sha256(root: str | Path) -> str:
    """A chip store's identity: the SHA-256 (hex) of its ``manifest.json`` bytes.

    ``geospade tile`` writes the manifest once, last, with its creation time: a copy of a store
    has the same identity, the same area tiled again another. Training records it in the
    checkpoint (``chips_manifest_sha256``) so that ``--resume`` notices another store.

    Args:
        root: the store's folder.

    Returns:
        64 hex digits.

    Raises:
        GeospadeError: the store has no readable ``manifest.json``.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise GeospadeError(f"{root} is not a complete chip store (no {MANIFEST})")
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise GeospadeError(f"cannot read {path} ({exc.strerror or exc})") from None

_MANIFEST_KEYS = ("scheme", "bands", "chip_size")


@dataclass(frozen=True)
class ChipStore:
    """A chip store with its manifest read and validated (docs/design.md, "Chip store").

    Args:
        root: the store's folder.
        manifest: the parsed ``manifest.json``, for the keys that have no field here
            (``sources``, ``options``, ``dropped``, …).
        scheme: its class scheme.
        bands: its bands with their normalisation stats.
        chip_size: chip width and height in pixels.
        stride: pixels between neighbouring chips (None: not recorded).
        counts: chips per split (only the splits the manifest lists).
        rgb: 0-based indices of the bands drawn as red, green, blue: the manifest's ``rgb``
            (what ``geospade tile`` chose), else chosen from the band names
            (:func:`geospade.raster.bands.rgb_bands`; one band three times is grey). None: a
            store built without :func:`open_chip_store`.
    """

    root: Path
    manifest: dict[str, Any]
    scheme: ClassScheme
    bands: tuple[BandStats, ...]
    chip_size: int
    stride: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    rgb: tuple[int, int, int] | None = None

    @property
    def num_classes(self) -> int:
        return self.scheme.num_classes

    @property
    def fraction_columns(self) -> list[str]:
        """The ``index.gpkg`` columns of the class fractions, in class order: the manifest's
        ``class_fraction_columns``, or ``frac_<index>`` for a store written before them."""
        columns = self.manifest.get("class_fraction_columns")
        if (isinstance(columns, list) and len(columns) == self.num_classes
                and all(isinstance(c, str) for c in columns)):
            return list(columns)
        return [f"frac_{i}" for i in range(self.num_classes)]

    @property
    def is_synthetic(self) -> bool:
        """Whether ``geospade generate`` painted this store (its manifest has a
        :data:`SYNTHETIC` table) rather than ``geospade tile`` cutting it from real imagery."""
        return isinstance(self.manifest.get(SYNTHETIC), dict)


SYNTHETIC = "synthetic"
"""The manifest key of a synthetic chip store: what painted it (checkpoint, its SHA-256 and step,
the real store it came from, variants, seed)."""


def check_real_chips(store: ChipStore, command: str) -> None:
    """Refuse a synthetic store where the real chips it was made from are needed.

    Args:
        store: the open store.
        command: what needs real chips, for the message ("evaluate", "geospade generate").

    Raises:
        GeospadeError: the store is synthetic; the message names its real store when known.
    """
    if store.is_synthetic:
        source = store.manifest[SYNTHETIC].get("source_store")
        raise GeospadeError(f"{store.root} is a synthetic chip store (from geospade generate); "
                            f"{command} needs the real chips it was made from"
                            + (f" ({source})" if source else ""))


def is_chip_store(path: str | Path) -> bool:
    """Whether ``path`` is a folder whose manifest says it is a chip store (of any version).

    Recognises a store without validating it (:func:`open_chip_store` does that): enough to
    tell a store an output may replace from a folder it may not.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def read_counts(root: str | Path) -> dict[str, Any] | None:
    """The manifest's ``counts`` (chips per split) as written, or None when the manifest is
    missing, unreadable or has none; no other key is checked.

    A quick look after tiling (``geospade run`` checks the split it evaluates got chips);
    :func:`open_chip_store` validates the whole manifest.
    """
    try:
        manifest = json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    counts = manifest.get("counts") if isinstance(manifest, dict) else None
    return counts if isinstance(counts, dict) else None


def open_chip_store(root: str | Path) -> ChipStore:
    """Read and validate a chip store's manifest.

    Args:
        root: the store's folder.

    Returns:
        The :class:`ChipStore`.

    Raises:
        GeospadeError: the folder or its manifest is missing (an incomplete store: the manifest is
            written last), unreadable, or not a geospade chip store of a known version.
    """
    root = Path(root)
    if not root.is_dir():
        raise GeospadeError(f"chip store not found: {root}")
    path = root / MANIFEST
    if not path.is_file():
        raise GeospadeError(
            f"{root} is not a complete chip store "
            f"(no {MANIFEST}; was `geospade tile` interrupted?)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GeospadeError(f"{path} is not readable JSON ({exc})") from None
    check_format_header(manifest, str(root), "chip store", FORMAT, FORMAT_VERSION,
                        _MANIFEST_KEYS)
    # A hand-edited manifest fails here, in words, rather than as a KeyError in a later stage.
    scheme = ClassScheme.from_dict(manifest["scheme"], origin=str(path))
    bands = _bands(manifest["bands"], path)
    chip_size = manifest["chip_size"]
    if not _count(chip_size) or chip_size <= 0:
        raise GeospadeError(f"{path} has an invalid chip_size {chip_size!r}")
    stride = manifest.get("stride")
    if "stride" in manifest and not (_count(stride) and stride > 0):
        raise GeospadeError(f"{path} has an invalid stride {stride!r}")
    counts = manifest.get("counts", {})
    if not isinstance(counts, dict) or not all(
            isinstance(k, str) and _count(n) for k, n in counts.items()):
        raise GeospadeError(f"{path}: 'counts' must map each split to its number of chips, "
                            f"not {_json_type(counts)} {json.dumps(counts)[:40]}")
    return ChipStore(root, manifest, scheme, bands, chip_size, stride, dict(counts),
                     _rgb(manifest.get("rgb"), bands, path))


def _rgb(value: Any, bands: tuple[BandStats, ...], path: Path) -> tuple[int, int, int]:
    """The manifest's ``rgb`` (three 0-based band indices), checked; chosen from the band names
    when the manifest has none."""
    if value is None:
        from geospade.raster.bands import rgb_bands

        return rgb_bands([b.name for b in bands], []).indices
    if not (isinstance(value, list) and len(value) == 3
            and all(_count(i) and i < len(bands) for i in value)):
        raise GeospadeError(f"{path}: 'rgb' must be three band indices below {len(bands)}, not "
                            f"{json.dumps(value)[:40]}")
    return tuple(value)


def _bands(value: Any, path: Path) -> tuple[BandStats, ...]:
    """The manifest's ``bands``, checked: a non-empty list of band objects."""
    try:
        if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
            raise GeospadeError(f"'bands' must be a list of band objects, not "
                                f"{_json_type(value)}")
        bands = tuple(BandStats.from_dict(b) for b in value)
    except GeospadeError as exc:
        raise GeospadeError(f"{path}: {exc}") from None
    if not bands:
        raise GeospadeError(f"{path} lists no imagery bands")
    return bands


# -- reading the index -------------------------------------------------------------------------


def read_index(root: str | Path) -> list[dict[str, Any]]:
    """The rows of the store's ``index.gpkg`` (id, split, image, mask, row_off, col_off; no
    geometry), in file order.

    Args:
        root: the store's folder.

    Returns:
        One dict per chip; ``image`` and ``mask`` are paths relative to ``root``, ``row_off``
        and ``col_off`` (int) the chip's offsets on the land cover it was cut from.

    Raises:
        GeospadeError: the index is missing or not readable.
    """
    import pyogrio

    path = Path(root) / INDEX
    if not path.is_file():
        raise GeospadeError(f"{root} is not a complete chip store (no {INDEX})")
    try:
        table = pyogrio.read_dataframe(
            path, layer=INDEX_LAYER, columns=["id", "split", "image", "mask", "row_off",
                                              "col_off"],
            read_geometry=False,
        )
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types for a bad file
        raise GeospadeError(
            f"{path} is not a readable chip index ({' '.join(str(exc).split())})"
        ) from None
    return [
        {"id": str(r.id), "split": str(r.split), "image": str(r.image), "mask": str(r.mask),
         "row_off": int(r.row_off), "col_off": int(r.col_off)}
        for r in table.itertuples(index=False)
    ]


def _count(value: Any) -> bool:
    """A JSON whole number that is not negative (``true`` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_type(value: Any) -> str:
    """``value``'s JSON type, for messages: "a string", "an object"."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"
