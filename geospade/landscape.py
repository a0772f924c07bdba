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
from shapely.geometry import LineString, box

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
    crs = CRS.from_user_input(crs)
    if resolution is None:
        resolution = 1e-5 if crs.is_geographic else 1.0
    if origin is None:
        origin = (-76.6, 39.3) if crs.is_geographic else (360000.0, 4350000.0)
    transform = from_origin(origin[0], origin[1], resolution, resolution)
    rng = np.random.default_rng(seed)
    k = scheme.num_classes
    roles = _assign_roles(scheme)
    role_class = {}
    for i, r in roles.items():
        role_class.setdefault(r, i)

    s = max(feature_scale, 0.05)
    # Blobs are painted with the "area" classes; water, built-up land and roads come from their
    # own features below.
    blob_classes = [i for i in range(k) if roles.get(i) not in ("water", "built", "road")]
    blob_classes = blob_classes or list(range(k))
    blob_noise = [_SmoothNoise(rng, height, width, max(8, int(96 * s))) for _ in blob_classes]
    detail_noise = _SmoothNoise(rng, height, width, max(4, int(24 * s)))
    water_noise = _SmoothNoise(rng, height, width, max(16, int(200 * s)))
    tex_coarse = [_SmoothNoise(rng, height, width, 6) for _ in range(bands)]
    tex_fine = _SmoothNoise(rng, height, width, 2)

    # Vector features in pixel space: rectangular fields and straight roads.
    n_fields = max(1, int(width * height / (200_000 * s * s)))
    fields = []
    field_classes = [role_class[r] for r in ("field", "barren") if r in role_class]
    field_classes = field_classes or list(range(k))
    for _ in range(n_fields):
        w, h = rng.uniform(40, 160, size=2) * s
        x0, y0 = rng.uniform(-w / 2, width), rng.uniform(-h / 2, height)
        fields.append((box(x0, y0, x0 + w, y0 + h), int(rng.choice(field_classes))))
    n_roads = max(1, int((width + height) / (700 * s)))
    roads = []
    for _ in range(n_roads):
        if rng.random() < 0.5:
            y = rng.uniform(0, height)
            line = LineString([(-10, y), (width + 10, y + rng.uniform(-0.3, 0.3) * width)])
        else:
            x = rng.uniform(0, width)
            line = LineString([(x, -10), (x + rng.uniform(-0.3, 0.3) * height, height + 10)])
        roads.append(line)
    road_width = max(2.0, 4.0 * min(s, 2.0))

    means, texture = _class_spectra(scheme, bands, seed)
    scale = 255.0 if dtype == "uint8" else 10000.0
    largest = max([*scheme.values, *[int(v) for v in scheme.nodata if v >= 0], 0])
    label_dtype = "uint8" if largest < 256 else "uint16"
    nodata_value = scheme.nodata[0] if scheme.nodata else None
    if nodata_fraction > 0 and nodata_value is None:
        raise GeospadeError(f"scheme {scheme.name!r} has no nodata value to paint")
    values = np.array(scheme.values, dtype=np.int64)

    landcover_path, imagery_path = Path(landcover_path), Path(imagery_path)
    common = dict(
        driver="GTiff", width=width, height=height, crs=crs, transform=transform, tiled=True,
        blockxsize=block_size, blockysize=block_size, compress="deflate",
    )
    if width < 16 or height < 16:
        common.update(tiled=False)
        del common["blockxsize"], common["blockysize"]
    lc_profile = dict(common, count=1, dtype=label_dtype, nodata=nodata_value)
    im_profile = dict(common, count=bands, dtype=dtype)
    if bands >= 3:
        im_profile["photometric"] = "minisblack"

    with rasterio.open(landcover_path, "w", **lc_profile) as lc, rasterio.open(
        imagery_path, "w", **im_profile
    ) as im:
        if bands <= len(BAND_NAMES):
            for b in range(bands):
                im.set_band_description(b + 1, BAND_NAMES[b])
        if label_dtype == "uint8":
            lc.write_colormap(1, {c.value: (*c.color, 255) for c in scheme.classes})
        strip = block_size
        for row0 in range(0, height, strip):
            rows = min(strip, height - row0)
            window = Window(0, row0, width, rows)
            # Classes: the argmax of smooth per-class noise gives coherent blobs.
            score = np.stack([n.sample(row0, 0, rows, width) for n in blob_noise])
            score += 0.35 * detail_noise.sample(row0, 0, rows, width)[None]
            idx = np.asarray(blob_classes, dtype=np.uint8)[score.argmax(axis=0)]
            wt = Affine.translation(0, row0)  # vector features live in pixel space
            for poly, cls in fields:
                burn = rasterize([(poly, 1)], out_shape=(rows, width), transform=wt, dtype="uint8")
                idx[burn.astype(bool)] = cls
            if "water" in role_class:
                water = water_noise.sample(row0, 0, rows, width) > 1.1
                idx[water] = role_class["water"]
            if "built" in role_class:
                built = rasterize(
                    [(r.buffer(road_width * 6), 1) for r in roads], out_shape=(rows, width),
                    transform=wt, dtype="uint8",
                ).astype(bool) & (detail_noise.sample(row0, 0, rows, width) > 0.2)
                idx[built] = role_class["built"]
            road_class = role_class.get("road", k - 1)
            on_road = rasterize(
                [(r.buffer(road_width / 2), 1) for r in roads], out_shape=(rows, width),
                transform=wt, dtype="uint8",
            ).astype(bool)
            idx[on_road] = road_class

            raw = values[idx].astype(label_dtype)
            if nodata_fraction > 0:
                yy = np.arange(row0, row0 + rows)[:, None] / max(height - 1, 1)
                xx = np.arange(width)[None, :] / max(width - 1, 1)
                raw[xx < nodata_fraction * (1 - yy)] = nodata_value
            lc.write(raw, 1, window=window)

            # Imagery: class spectrum + class-scaled texture + sensor noise.
            fine = tex_fine.sample(row0, 0, rows, width)
            amp = texture[idx]
            img = np.empty((bands, rows, width), dtype=np.float32)
            for b in range(bands):
                tex = 0.7 * tex_coarse[b].sample(row0, 0, rows, width) + 0.6 * fine
                img[b] = means[idx, b] + amp * tex
            img += rng.normal(0.0, 0.012, size=img.shape).astype(np.float32)
            img = np.clip(img * scale, 0, scale).round().astype(dtype)
            im.write(img, window=window)
    return LandscapePaths(landcover_path, imagery_path)

