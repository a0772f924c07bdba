"""Synthetic, georeferenced land-cover + imagery pairs for the demo, the tests and the benchmarks.

The land cover has spatially coherent regions — smooth blobs of vegetation, rectangular fields,
water bodies, straight roads with built-up land along them — never per-pixel noise. The imagery
is aligned with it pixel for pixel, and each pixel depends on its class: a class spectrum, a
class-specific texture and a little sensor noise. Both are written strip by strip, so any size
fits in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.transform import from_origin
from rasterio.windows import Window
from shapely.geometry import LineString, Polygon, box

from geospade.errors import GeospadeError
from geospade.schemes import ClassScheme, load_scheme

# Roles the generator paints, matched to a scheme's classes by name.
_ROLE_KEYWORDS = {
    "water": ("water",),
    "forest": ("tree", "forest", "canopy", "woody"),
    "field": ("low vegetation", "grass", "pasture", "crop", "herbaceous", "field", "shrub"),
    "barren": ("barren",),
    "built": ("impervious surfaces", "structure", "developed", "building", "urban"),
    "road": ("road",),
}

# Mean reflectance-like spectra (R, G, B, NIR, then repeated) per role, on a 0..1 scale,
# and the amplitude of the role's texture.
_ROLE_SPECTRA = {
    "water": ((0.12, 0.20, 0.30, 0.05), 0.02),
    "forest": ((0.14, 0.30, 0.12, 0.62), 0.10),
    "field": ((0.42, 0.58, 0.28, 0.50), 0.05),
    "barren": ((0.72, 0.60, 0.45, 0.55), 0.06),
    "built": ((0.62, 0.60, 0.62, 0.36), 0.08),
    "road": ((0.30, 0.30, 0.32, 0.24), 0.02),
}

BAND_NAMES = ("red", "green", "blue", "nir")


@dataclass(frozen=True)
class LandscapePaths:
    """The two rasters :func:`make_landscape` wrote."""

    landcover: Path
    imagery: Path


def _assign_roles(scheme: ClassScheme) -> dict[int, str]:
    """Class index -> role, by keywords in the class names; unmatched classes get a colour role."""
    roles: dict[int, str] = {}
    for i, cls in enumerate(scheme.classes):
        name = cls.name.lower()
        for role, words in _ROLE_KEYWORDS.items():
            if any(w in name for w in words):
                roles[i] = role
                break
    return roles


def _class_spectra(scheme: ClassScheme, bands: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean spectrum (K, bands) in 0..1 and texture amplitude (K,)."""
    rng = np.random.default_rng(seed + 7)
    roles = _assign_roles(scheme)
    means = np.empty((scheme.num_classes, bands), dtype=np.float32)
    texture = np.empty(scheme.num_classes, dtype=np.float32)
    for i in range(scheme.num_classes):
        if i in roles:
            spec, tex = _ROLE_SPECTRA[roles[i]]
            # Classes sharing a role (e.g. NLCD's three forests) differ by a small shift.
            shift = rng.uniform(-0.06, 0.06, size=bands)
        else:
            spec, tex = tuple(rng.uniform(0.1, 0.8, size=4)), 0.05
            shift = np.zeros(bands)
        base = np.array([spec[b % 4] for b in range(bands)])
        means[i] = np.clip(base + shift, 0.02, 0.95)
        texture[i] = tex
    return means, texture


class _SmoothNoise:
    """Value noise on a global low-resolution lattice, sampled bilinearly at any pixel window.

    Because the lattice is global, two windows sample the same field where they overlap.
    """

    def __init__(self, rng: np.random.Generator, height: int, width: int, cell: int):
        self.cell = cell
        self.grid = rng.standard_normal((height // cell + 3, width // cell + 3)).astype(np.float32)

    def sample(self, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
        y = (np.arange(row0, row0 + rows, dtype=np.float32) + 0.5) / self.cell
        x = (np.arange(col0, col0 + cols, dtype=np.float32) + 0.5) / self.cell
        y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
        fy, fx = (y - y0)[:, None], (x - x0)[None, :]
        # Smoothstep weights avoid visible lattice creases.
        fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
        g = self.grid
        a, b = g[np.ix_(y0, x0)], g[np.ix_(y0, x0 + 1)]
        c, d = g[np.ix_(y0 + 1, x0)], g[np.ix_(y0 + 1, x0 + 1)]
        return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def make_landscape(
    landcover_path: str | Path,
    imagery_path: str | Path,
    width: int = 1024,
    height: int = 1024,
    scheme: str | ClassScheme = "chesapeake7",
    crs: str | CRS = "EPSG:26918",
    resolution: float | None = None,
    origin: tuple[float, float] | None = None,
    bands: int = 4,
    dtype: str = "uint8",
    seed: int = 0,
    nodata_fraction: float = 0.0,
    block_size: int = 512,
    feature_scale: float = 1.0,
) -> LandscapePaths:
    """Write a synthetic land-cover GeoTIFF and an aligned multi-band imagery GeoTIFF.

    Args:
        landcover_path: output land-cover raster (raw scheme values, uint8 or uint16 as needed).
        imagery_path: output imagery raster, ``bands`` bands of ``dtype``.
        width, height: raster size in pixels (any size: written in strips).
        scheme: class scheme name or object; classes are painted by role (water, forest, fields,
            barren, built-up, roads) matched from their names.
        crs: coordinate reference system of both rasters.
        resolution: pixel size in CRS units (default 1 m, or 1e-5 degrees for a geographic CRS).
        origin: (x, y) of the upper-left corner (default: in Maryland for the default CRSs).
        bands: number of imagery bands (R, G, B, NIR, then repeating spectra).
        dtype: ``uint8`` (0..255) or ``uint16`` (0..10000 reflectance-like).
        seed: random seed; the same arguments give byte-identical files.
        nodata_fraction: fraction of the width, on the left, whose labels are the scheme's nodata
            value (a triangle, so chips see partial nodata).
        block_size: internal tile size of both GeoTIFFs.
        feature_scale: multiplies the size of blobs, fields and water bodies (1 = about 1 m pixels).

    Returns:
        The two paths.
    """
    scheme = load_scheme(scheme)
    if dtype not in ("uint8", "uint16"):
        raise GeospadeError(f"imagery dtype must be uint8 or uint16, not {dtype}")
    if width <= 0 or height <= 0 or bands <= 0:
        raise GeospadeError("width, height and bands must be positive")
    crs, transform = _georeferencing(crs, resolution, origin)
    # One generator for the whole landscape, drawn from in a fixed order (noise lattices, then
    # fields and roads, then the sensor noise strip by strip): the same seed, the same files.
    rng = np.random.default_rng(seed)
    layout, texture_noise = _class_layout(rng, scheme, width, height, bands, feature_scale)
    look = _Look(*_class_spectra(scheme, bands, seed), *texture_noise,
                 scale=255.0 if dtype == "uint8" else 10000.0, dtype=dtype, rng=rng)
    labels = _Labels.for_scheme(scheme, nodata_fraction, width, height)
    landcover_path, imagery_path = Path(landcover_path), Path(imagery_path)
    lc_profile, im_profile = _profiles(width, height, crs, transform, block_size, labels, bands,
                                       dtype)
    with rasterio.open(landcover_path, "w", **lc_profile) as lc, rasterio.open(
        imagery_path, "w", **im_profile
    ) as im:
        if bands <= len(BAND_NAMES):
            for b in range(bands):
                im.set_band_description(b + 1, BAND_NAMES[b])
        if labels.dtype == "uint8":
            lc.write_colormap(1, {c.value: (*c.color, 255) for c in scheme.classes})
        for row0 in range(0, height, block_size):
            rows = min(block_size, height - row0)
            window = Window(0, row0, width, rows)
            idx = layout.paint(row0, rows, width)
            lc.write(labels.raw(idx, row0), 1, window=window)
            im.write(look.paint(idx, row0), window=window)
    return LandscapePaths(landcover_path, imagery_path)


def _georeferencing(crs: str | CRS, resolution: float | None,
                    origin: tuple[float, float] | None) -> tuple[CRS, Affine]:
    """The CRS and the transform of both rasters (defaults: 1 m or 1e-5 degree pixels, in
    Maryland)."""
    crs = CRS.from_user_input(crs)
    if resolution is None:
        resolution = 1e-5 if crs.is_geographic else 1.0
    if origin is None:
        origin = (-76.6, 39.3) if crs.is_geographic else (360000.0, 4350000.0)
    return crs, from_origin(origin[0], origin[1], resolution, resolution)


@dataclass(frozen=True)
class _ClassLayout:
    """Where each class lies: blobs of the "area" classes (the argmax of smooth per-class noise),
    rectangular fields over them, then water bodies, built-up land along the roads, and roads.

    Fields and roads are shapes in pixel space; every field is sampled at any strip.
    """

    num_classes: int
    role_class: dict[str, int]
    blob_classes: list[int]
    blob_noise: list[_SmoothNoise]
    detail_noise: _SmoothNoise
    water_noise: _SmoothNoise
    fields: list[tuple[Polygon, int]]
    roads: list[LineString]
    road_width: float

    def paint(self, row0: int, rows: int, width: int) -> np.ndarray:
        """Class indices ``(rows, width)`` uint8 of the strip starting at row ``row0``."""
        # Classes: the argmax of smooth per-class noise gives coherent blobs.
        score = np.stack([n.sample(row0, 0, rows, width) for n in self.blob_noise])
        score += 0.35 * self.detail_noise.sample(row0, 0, rows, width)[None]
        idx = np.asarray(self.blob_classes, dtype=np.uint8)[score.argmax(axis=0)]
        wt = Affine.translation(0, row0)  # vector features live in pixel space
        for poly, cls in self.fields:
            burn = rasterize([(poly, 1)], out_shape=(rows, width), transform=wt, dtype="uint8")
            idx[burn.astype(bool)] = cls
        if "water" in self.role_class:
            water = self.water_noise.sample(row0, 0, rows, width) > 1.1
            idx[water] = self.role_class["water"]
        if "built" in self.role_class:
            built = rasterize(
                [(r.buffer(self.road_width * 6), 1) for r in self.roads],
                out_shape=(rows, width), transform=wt, dtype="uint8",
            ).astype(bool) & (self.detail_noise.sample(row0, 0, rows, width) > 0.2)
            idx[built] = self.role_class["built"]
        road_class = self.role_class.get("road", self.num_classes - 1)
        on_road = rasterize(
            [(r.buffer(self.road_width / 2), 1) for r in self.roads], out_shape=(rows, width),
            transform=wt, dtype="uint8",
        ).astype(bool)
        idx[on_road] = road_class
        return idx


def _class_layout(rng: np.random.Generator, scheme: ClassScheme, width: int, height: int,
                  bands: int, feature_scale: float
                  ) -> tuple[_ClassLayout, tuple[list[_SmoothNoise], _SmoothNoise]]:
    """Draw the land cover's features, and the imagery's texture noise between them.

    Returns:
        The layout, and the coarse (one per band) and fine texture noise of the imagery (drawn
        after the layout's noise and before its fields, as a seed has always drawn them).
    """
    k = scheme.num_classes
    roles = _assign_roles(scheme)
    role_class: dict[str, int] = {}
    for i, r in roles.items():
        role_class.setdefault(r, i)
    s = max(feature_scale, 0.05)
    # Blobs are painted with the "area" classes; water, built-up land and roads come from their
    # own features.
    blob_classes = [i for i in range(k) if roles.get(i) not in ("water", "built", "road")]
    blob_classes = blob_classes or list(range(k))
    blob_noise = [_SmoothNoise(rng, height, width, max(8, int(96 * s))) for _ in blob_classes]
    detail_noise = _SmoothNoise(rng, height, width, max(4, int(24 * s)))
    water_noise = _SmoothNoise(rng, height, width, max(16, int(200 * s)))
    tex_coarse = [_SmoothNoise(rng, height, width, 6) for _ in range(bands)]
    tex_fine = _SmoothNoise(rng, height, width, 2)
    field_classes = [role_class[r] for r in ("field", "barren") if r in role_class]
    fields = _fields(rng, width, height, s, field_classes or list(range(k)))
    roads = _roads(rng, width, height, s)
    layout = _ClassLayout(k, role_class, blob_classes, blob_noise, detail_noise, water_noise,
                          fields, roads, road_width=max(2.0, 4.0 * min(s, 2.0)))
    return layout, (tex_coarse, tex_fine)


def _fields(rng: np.random.Generator, width: int, height: int, s: float,
            classes: list[int]) -> list[tuple[Polygon, int]]:
    """Rectangular fields in pixel space (about one per 200 000 px at scale 1), each of a field
    or barren class."""
    fields = []
    for _ in range(max(1, int(width * height / (200_000 * s * s)))):
        w, h = rng.uniform(40, 160, size=2) * s
        x0, y0 = rng.uniform(-w / 2, width), rng.uniform(-h / 2, height)
        fields.append((box(x0, y0, x0 + w, y0 + h), int(rng.choice(classes))))
    return fields


def _roads(rng: np.random.Generator, width: int, height: int, s: float) -> list[LineString]:
    """Straight roads across the whole raster in pixel space, about horizontal or vertical."""
    roads = []
    for _ in range(max(1, int((width + height) / (700 * s)))):
        if rng.random() < 0.5:
            y = rng.uniform(0, height)
            line = LineString([(-10, y), (width + 10, y + rng.uniform(-0.3, 0.3) * width)])
        else:
            x = rng.uniform(0, width)
            line = LineString([(x, -10), (x + rng.uniform(-0.3, 0.3) * height, height + 10)])
        roads.append(line)
    return roads


@dataclass(frozen=True)
class _Labels:
    """How class indices become the land cover's raw values, with its nodata triangle."""

    values: np.ndarray
    dtype: str
    nodata: int | None
    nodata_fraction: float
    width: int
    height: int

    @classmethod
    def for_scheme(cls, scheme: ClassScheme, nodata_fraction: float, width: int,
                   height: int) -> _Labels:
        """uint8 values when every value of the scheme fits, else uint16.

        Raises:
            GeospadeError: ``nodata_fraction`` with a scheme that has no nodata value.
        """
        largest = max([*scheme.values, *[int(v) for v in scheme.nodata if v >= 0], 0])
        nodata = scheme.nodata[0] if scheme.nodata else None
        if nodata_fraction > 0 and nodata is None:
            raise GeospadeError(f"scheme {scheme.name!r} has no nodata value to paint")
        return cls(np.array(scheme.values, dtype=np.int64), "uint8" if largest < 256 else "uint16",
                   nodata, nodata_fraction, width, height)

    def raw(self, idx: np.ndarray, row0: int) -> np.ndarray:
        """The raw values of class indices ``idx`` of the strip starting at row ``row0``."""
        raw = self.values[idx].astype(self.dtype)
        if self.nodata_fraction > 0:
            rows = idx.shape[0]
            yy = np.arange(row0, row0 + rows)[:, None] / max(self.height - 1, 1)
            xx = np.arange(self.width)[None, :] / max(self.width - 1, 1)
            raw[xx < self.nodata_fraction * (1 - yy)] = self.nodata
        return raw


@dataclass(frozen=True)
class _Look:
    """How each class looks: its mean spectrum, plus texture scaled by its amplitude, plus a
    little sensor noise (drawn from ``rng`` strip by strip)."""

    means: np.ndarray
    texture: np.ndarray
    coarse: list[_SmoothNoise]
    fine: _SmoothNoise
    scale: float
    dtype: str
    rng: np.random.Generator

    def paint(self, idx: np.ndarray, row0: int) -> np.ndarray:
        """Imagery ``(bands, rows, width)`` of ``dtype`` for class indices ``idx`` of the strip
        starting at row ``row0``."""
        rows, width = idx.shape
        fine = self.fine.sample(row0, 0, rows, width)
        amp = self.texture[idx]
        img = np.empty((len(self.coarse), rows, width), dtype=np.float32)
        for b in range(len(self.coarse)):
            tex = 0.7 * self.coarse[b].sample(row0, 0, rows, width) + 0.6 * fine
            img[b] = self.means[idx, b] + amp * tex
        img += self.rng.normal(0.0, 0.012, size=img.shape).astype(np.float32)
        return np.clip(img * self.scale, 0, self.scale).round().astype(self.dtype)


def _profiles(width: int, height: int, crs: CRS, transform: Affine, block_size: int,
              labels: _Labels, bands: int, dtype: str) -> tuple[dict, dict]:
    """Creation profiles of the land cover and the imagery: tiled, DEFLATE (strips when
    smaller than the smallest tile)."""
    common = dict(
        driver="GTiff", width=width, height=height, crs=crs, transform=transform, tiled=True,
        blockxsize=block_size, blockysize=block_size, compress="deflate",
    )
    if width < 16 or height < 16:
        common.update(tiled=False)
        del common["blockxsize"], common["blockysize"]
    lc_profile = dict(common, count=1, dtype=labels.dtype, nodata=labels.nodata)
    im_profile = dict(common, count=bands, dtype=dtype)
    if bands >= 3:
        im_profile["photometric"] = "minisblack"
    return lc_profile, im_profile
